use burn::store::ModuleSnapshot;
use rslad::data::DatasetKind;
use rslad::models::ModelSpec;
fn main() {
    let d = burn::prelude::Device::flex();
    for n in [
        "cnn-small",
        "resnet18",
        "resnet50",
        "mobilenetv2",
        "wrn-16-2",
        "wrn-16-2-dm",
    ] {
        let m = ModelSpec::for_dataset(n.parse().unwrap(), DatasetKind::Cifar10)
            .build(&d)
            .unwrap();
        let names: Vec<String> = m
            .collect(None, None, true)
            .iter()
            .map(|t| format!("{}{:?}", t.name, t.shape.to_vec()))
            .collect();
        println!(
            "{n}: {} tensors; first {:?}\n  ... {:?}",
            names.len(),
            &names[..names.len().min(14)],
            &names[names.len().saturating_sub(8)..]
        );
    }
}
