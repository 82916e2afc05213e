//! The only place that knows which burn backend this build runs on.

use burn::prelude::*;

/// The backend compiled in, by priority: CUDA, then libtorch, then flex.
pub fn backend_name() -> &'static str {
    if cfg!(feature = "cuda") {
        "cuda"
    } else if cfg!(feature = "tch") {
        "tch"
    } else {
        "flex"
    }
}

/// The device a run uses (without autodiff; `device.autodiff()` gives the training device).
#[allow(deprecated)] // burn marks its libtorch constructors deprecated; the feature is ours.
pub fn default_device() -> Device {
    #[cfg(feature = "cuda")]
    {
        Device::cuda(0)
    }
    #[cfg(all(feature = "tch", not(feature = "cuda")))]
    {
        if std::env::var("RSLAD_TCH_CUDA").is_ok() {
            Device::libtorch_cuda(0)
        } else {
            Device::libtorch()
        }
    }
    #[cfg(all(feature = "flex", not(feature = "tch"), not(feature = "cuda")))]
    {
        Device::flex()
    }
}

/// A line naming backend and device, for `--version` and run configs.
pub fn describe() -> String {
    format!("{} on {:?}", backend_name(), default_device())
}

/// Process setup for speed: keeps freed memory in glibc's heap instead of returning it to the
/// OS after every large tensor. flex allocates and frees big buffers at each operation, and
/// re-faulting those pages cost 40% of a small CNN's training step (measured with perf on
/// cnn-small, batch 128). Call once, early; harmless elsewhere.
pub fn init() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        // M_TRIM_THRESHOLD = -1, M_TOP_PAD = -2, M_MMAP_THRESHOLD = -3 (malloc.h).
        libc::mallopt(-3, 32 * 1024 * 1024);
        libc::mallopt(-1, 1 << 30);
        libc::mallopt(-2, 256 * 1024 * 1024);
    }
}
