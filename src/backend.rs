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
