//! The only place that knows which burn backends this build has and which device a run uses.
//!
//! Cargo features compile backends in (README, Backends): `flex` (default, CPU), `tch`
//! (libtorch, CPU or CUDA), `vulkan` (CubeCL on wgpu/SPIR-V, any Vulkan GPU) and `cuda` (CubeCL
//! CUDA). Where a build has a CPU and a GPU backend, `RSLAD_DEVICE=cpu|gpu` picks one at run time;
//! unset, a CubeCL GPU backend wins, then libtorch's CPU (its CUDA with `RSLAD_TCH_CUDA=1`), then
//! flex.

use burn::prelude::*;
use std::sync::OnceLock;

/// The environment variable that picks the device at run time.
pub const DEVICE_ENV: &str = "RSLAD_DEVICE";

/// Where a run computes, as asked for with `RSLAD_DEVICE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    Cpu,
    Gpu,
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::Cpu),
            "gpu" => Ok(Self::Gpu),
            other => Err(format!(
                "{DEVICE_ENV}={other}: unknown device; use {DEVICE_ENV}=cpu or {DEVICE_ENV}=gpu \
                 (or leave it unset for the build's first backend)"
            )),
        }
    }
}

/// One backend and device kind a build can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// CubeCL's CUDA runtime (feature `cuda`).
    Cuda,
    /// CubeCL on wgpu, pinned to Vulkan (feature `vulkan`).
    Vulkan,
    /// libtorch on CUDA device 0 (feature `tch`).
    TchCuda,
    /// libtorch on the CPU (feature `tch`).
    TchCpu,
    /// burn-flex on the CPU (feature `flex`).
    Flex,
}

impl BackendKind {
    /// The name recorded in configs and results (the Cargo feature).
    pub fn name(self) -> &'static str {
        match self {
            Self::Cuda => "cuda",
            Self::Vulkan => "vulkan",
            Self::TchCuda | Self::TchCpu => "tch",
            Self::Flex => "flex",
        }
    }

    pub fn is_gpu(self) -> bool {
        matches!(self, Self::Cuda | Self::Vulkan | Self::TchCuda)
    }
}

/// The backends compiled into this build, in the order a choice looks at them.
pub fn compiled() -> Vec<BackendKind> {
    let mut v = Vec::new();
    if cfg!(feature = "cuda") {
        v.push(BackendKind::Cuda);
    }
    if cfg!(feature = "vulkan") {
        v.push(BackendKind::Vulkan);
    }
    if cfg!(feature = "tch") {
        v.push(BackendKind::TchCuda);
        v.push(BackendKind::TchCpu);
    }
    if cfg!(feature = "flex") {
        v.push(BackendKind::Flex);
    }
    v
}

fn features(compiled: &[BackendKind]) -> String {
    let mut names: Vec<&str> = compiled.iter().map(|b| b.name()).collect();
    names.dedup();
    if names.is_empty() {
        "no backend".into()
    } else {
        names.join(", ")
    }
}

/// Which of the `compiled` backends a run uses: `choice` is `RSLAD_DEVICE` (None when unset),
/// `tch_cuda` whether `RSLAD_TCH_CUDA` is set (libtorch's GPU when no choice is given).
pub fn pick(
    compiled: &[BackendKind],
    choice: Option<DeviceChoice>,
    tch_cuda: bool,
) -> Result<BackendKind, String> {
    let has = |b: BackendKind| compiled.contains(&b);
    let first = |order: &[BackendKind]| order.iter().copied().find(|&b| has(b));
    match choice {
        Some(DeviceChoice::Gpu) => {
            first(&[BackendKind::Cuda, BackendKind::Vulkan, BackendKind::TchCuda]).ok_or_else(
                || {
                    format!(
                    "{DEVICE_ENV}=gpu, but this build has no GPU backend (it has {}); build with \
                     `cargo build --release --features vulkan` (any Vulkan GPU), `--features cuda` \
                     or `--features tch` (README, Backends)",
                    features(compiled)
                )
                },
            )
        }
        Some(DeviceChoice::Cpu) => {
            first(&[BackendKind::TchCpu, BackendKind::Flex]).ok_or_else(|| {
                format!(
                "{DEVICE_ENV}=cpu, but this build has no CPU backend (it has {}); build with the \
                 default `flex` feature too, e.g. `cargo build --release --features vulkan`",
                features(compiled)
            )
            })
        }
        None => {
            let order: &[BackendKind] = if tch_cuda {
                &[BackendKind::Cuda, BackendKind::Vulkan, BackendKind::TchCuda]
            } else {
                &[
                    BackendKind::Cuda,
                    BackendKind::Vulkan,
                    BackendKind::TchCpu,
                    BackendKind::Flex,
                ]
            };
            first(order).ok_or_else(|| {
                format!(
                    "this build has no usable backend (it has {}); build with the default \
                     features or one of vulkan, cuda, tch",
                    features(compiled)
                )
            })
        }
    }
}

/// The backend this process uses, read once from the environment.
pub fn selected() -> Result<BackendKind, String> {
    static SELECTED: OnceLock<Result<BackendKind, String>> = OnceLock::new();
    SELECTED
        .get_or_init(|| {
            let choice = match std::env::var(DEVICE_ENV) {
                Ok(v) if !v.trim().is_empty() => Some(v.parse::<DeviceChoice>()?),
                _ => None,
            };
            let tch_cuda = std::env::var_os("RSLAD_TCH_CUDA").is_some();
            pick(&compiled(), choice, tch_cuda)
        })
        .clone()
}

/// The backend compiled in and chosen (see [`selected`]); "unavailable" if the choice is invalid.
pub fn backend_name() -> &'static str {
    selected().map(|b| b.name()).unwrap_or("unavailable")
}

/// The device of a backend (without autodiff; `device.autodiff()` gives the training device).
#[allow(deprecated)] // burn marks its libtorch constructors deprecated; the feature is ours.
#[allow(unreachable_code, unused_variables)] // each arm exists only with its feature
fn device_of(kind: BackendKind) -> Device {
    match kind {
        BackendKind::Cuda => {
            #[cfg(feature = "cuda")]
            return Device::cuda(0);
        }
        BackendKind::Vulkan => {
            #[cfg(feature = "vulkan")]
            return Device::vulkan(burn::tensor::DeviceKind::DefaultDevice);
        }
        BackendKind::TchCuda => {
            #[cfg(feature = "tch")]
            return Device::libtorch_cuda(0);
        }
        BackendKind::TchCpu => {
            #[cfg(feature = "tch")]
            return Device::libtorch();
        }
        BackendKind::Flex => {
            #[cfg(feature = "flex")]
            return Device::flex();
        }
    }
    unreachable!("{kind:?} is not compiled into this build; `pick` only returns compiled backends")
}

/// The device a run uses (without autodiff; `device.autodiff()` gives the training device).
///
/// Panics with the reason if `RSLAD_DEVICE` asks for something this build lacks; the CLI
/// checks [`selected`] first and reports that as an error instead.
pub fn default_device() -> Device {
    match selected() {
        Ok(kind) => device_of(kind),
        Err(e) => panic!("{e}"),
    }
}

/// The name a GPU device gives itself (e.g. `NVIDIA H100 PCIe`), which opens the device;
/// `Err` with the reason when it cannot be opened (no driver, no Vulkan loader).
#[allow(unused_variables, unreachable_code)] // the body is there only with a CubeCL GPU feature
fn gpu_name(device: &Device) -> Option<Result<String, String>> {
    #[cfg(any(feature = "vulkan", feature = "cuda"))]
    {
        let device = device.clone();
        // A runtime that finds no adapter panics; its reason becomes our error message, so the
        // default hook's "panicked at" line is kept off stderr meanwhile.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            device.identity().map(|i| i.name)
        }));
        std::panic::set_hook(hook);
        return Some(match opened {
            Ok(name) => Ok(name.unwrap_or_else(|| "unnamed device".into())),
            Err(panic) => Err(panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the runtime panicked".into())),
        });
    }
    None
}

fn describe_kind(kind: BackendKind) -> Result<String, String> {
    let device = device_of(kind);
    match (kind, gpu_name(&device)) {
        (BackendKind::Cuda | BackendKind::Vulkan, Some(Ok(name))) => {
            Ok(format!("{} on {name} ({device:?})", kind.name()))
        }
        (BackendKind::Cuda | BackendKind::Vulkan, Some(Err(why))) => Err(format!(
            "the {} backend cannot open a GPU ({why}); it needs a GPU driver{} — or run on the \
             CPU with {DEVICE_ENV}=cpu in a build that has flex (README, Backends)",
            kind.name(),
            if kind == BackendKind::Vulkan {
                " and the Vulkan loader (Debian/Ubuntu: libvulkan1; check with `vulkaninfo --summary`)"
            } else {
                " and CUDA"
            }
        )),
        _ => Ok(format!("{} on {device:?}", kind.name())),
    }
}

/// Opens the chosen device once and says which it is, e.g. `flex on Device<Flex(Cpu)>` or
/// `vulkan on NVIDIA H100 PCIe (Device<Cube(Wgpu(...))>)`: the line `--version`, run configs
/// and results record. `Err` says why the chosen backend cannot run here.
pub fn check() -> Result<String, String> {
    static DESCRIBED: OnceLock<Result<String, String>> = OnceLock::new();
    DESCRIBED.get_or_init(|| describe_kind(selected()?)).clone()
}

/// A line naming backend and device, for `--version` and run configs (the error when unusable).
pub fn describe() -> String {
    check().unwrap_or_else(|e| format!("unavailable: {e}"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use BackendKind::*;

    const ALL: [BackendKind; 5] = [Cuda, Vulkan, TchCuda, TchCpu, Flex];

    #[test]
    fn device_choice_parses_cpu_and_gpu_and_names_the_variable_otherwise() {
        assert_eq!("cpu".parse::<DeviceChoice>(), Ok(DeviceChoice::Cpu));
        assert_eq!(" GPU ".parse::<DeviceChoice>(), Ok(DeviceChoice::Gpu));
        let e = "cuda".parse::<DeviceChoice>().unwrap_err();
        assert!(
            e.contains("RSLAD_DEVICE=cuda") && e.contains("RSLAD_DEVICE=gpu"),
            "{e}"
        );
    }

    #[test]
    fn unset_prefers_cubecl_gpus_then_libtorch_cpu_then_flex() {
        assert_eq!(pick(&ALL, None, false), Ok(Cuda));
        assert_eq!(pick(&[Vulkan, Flex], None, false), Ok(Vulkan));
        assert_eq!(pick(&[TchCuda, TchCpu, Flex], None, false), Ok(TchCpu));
        assert_eq!(pick(&[TchCuda, TchCpu, Flex], None, true), Ok(TchCuda));
        assert_eq!(pick(&[Flex], None, false), Ok(Flex));
        assert!(pick(&[], None, false).is_err());
    }

    #[test]
    fn gpu_and_cpu_choices_pick_within_the_build_or_say_which_feature_is_missing() {
        assert_eq!(
            pick(&[Vulkan, Flex], Some(DeviceChoice::Cpu), false),
            Ok(Flex)
        );
        assert_eq!(
            pick(&[Vulkan, Flex], Some(DeviceChoice::Gpu), false),
            Ok(Vulkan)
        );
        assert_eq!(
            pick(&[TchCuda, TchCpu, Flex], Some(DeviceChoice::Gpu), false),
            Ok(TchCuda)
        );
        assert_eq!(
            pick(&[TchCuda, TchCpu, Flex], Some(DeviceChoice::Cpu), true),
            Ok(TchCpu)
        );
        let e = pick(&[Flex], Some(DeviceChoice::Gpu), false).unwrap_err();
        assert!(
            e.contains("no GPU backend (it has flex)") && e.contains("--features vulkan"),
            "{e}"
        );
        let e = pick(&[Vulkan], Some(DeviceChoice::Cpu), false).unwrap_err();
        assert!(e.contains("no CPU backend (it has vulkan)"), "{e}");
    }

    #[test]
    fn this_build_lists_its_features_and_describes_the_device_it_opens() {
        let built = compiled();
        assert_eq!(built.contains(&Flex), cfg!(feature = "flex"));
        assert_eq!(built.contains(&Vulkan), cfg!(feature = "vulkan"));
        if cfg!(feature = "flex") && !cfg!(feature = "tch") {
            let line = describe_kind(Flex).unwrap();
            assert!(line.starts_with("flex on Device<Flex"), "{line}");
        }
    }
}
