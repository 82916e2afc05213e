//! `rslad models`.

use rslad::data::DatasetKind;
use rslad::models::{ModelSpec, REGISTRY};

pub fn run() -> anyhow::Result<()> {
    let device = rslad::backend::default_device();
    println!("{:<12} {:>14}  description", "model", "params (C10)");
    for (name, description) in REGISTRY {
        let count = match name.parse() {
            Ok(arch) => {
                let spec = ModelSpec::for_dataset(arch, DatasetKind::Cifar10);
                let model = spec.build(&device)?;
                format!("{}", model.count_parameters())
            }
            Err(_) => "-".to_string(),
        };
        println!("{name:<12} {count:>14}  {description}");
    }
    Ok(())
}
