//! The one evaluation entry point (`eval::evaluate_checkpoint`), which `rslad eval` and the
//! experiment cells both use: the model/dataset check before the model is built, sharding, and
//! the checkpoint hash.

mod common;

use common::*;
use rslad::attacks::{self, AttackContext};
use rslad::data::{self, DatasetKind, Split};
use rslad::eval::{self, EvalConfig, EvalError, EvalRequest, Shard};
use rslad::models::{save_model, Arch, ModelSpec};
use std::path::Path;

fn request(checkpoint: &Path, data: &Path, shard: Option<Shard>) -> EvalRequest {
    EvalRequest {
        checkpoint: checkpoint.to_path_buf(),
        dataset: DatasetKind::FashionMnist,
        data_dir: Some(data.to_path_buf()),
        attacks: "fgsm".into(),
        eps: 0.1,
        n_examples: Some(10),
        shard,
        batch_size: 4,
        seed: 3,
        sanity_checks: false,
    }
}

#[test]
fn checkpoint_evaluation_checks_shards_and_hashes() {
    let root = temp_dir("eval-entry");
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    fake_fashion(&data, 0, 12, false);
    let device = device();

    // A CIFAR-10 model on Fashion-MNIST is refused, naming the file and both shapes.
    let cifar = root.join("cifar.safetensors");
    let model = ModelSpec::for_dataset(Arch::CnnSmall, DatasetKind::Cifar10)
        .build(&device)
        .unwrap();
    save_model(&model, &cifar, &[]).unwrap();
    let err =
        eval::evaluate_checkpoint(request(&cifar, &data, None), &device, &mut |_| {}).unwrap_err();
    assert!(matches!(err, EvalError::WrongDataset { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("cifar.safetensors") && text.contains("3x32x32") && text.contains("1x28x28"),
        "{text}"
    );

    // Shard 1 of 3 of the first 10 images is examples 3..6, evaluated as the whole run
    // evaluates them, with the checkpoint's SHA-256.
    let ckpt = root.join("fm.safetensors");
    device.seed(5);
    let model = ModelSpec::for_dataset(Arch::CnnSmall, DatasetKind::FashionMnist)
        .build(&device)
        .unwrap();
    save_model(&model, &ckpt, &[]).unwrap();
    let shard = Shard { index: 1, count: 3 };
    let prepared = eval::prepare(request(&ckpt, &data, Some(shard)), &device).unwrap();
    assert_eq!((prepared.examples(), prepared.test_len()), (3, 10));
    let r = prepared.run(&device, &mut |_| {}).unwrap();
    assert_eq!(r.example_ids, vec![3, 4, 5]);
    assert_eq!(
        r.checkpoint_sha256.as_deref(),
        Some(rslad::io::sha256_file(&ckpt).unwrap().as_str())
    );
    assert_eq!(r.checkpoint, Some(ckpt.display().to_string()));
    // The same weights saved again are the same bytes (the header's metadata is not written
    // in a hash map's order), so the hash names the weights.
    let extra = [
        ("a", "1".to_string()),
        ("b", "2".to_string()),
        ("c", "3".to_string()),
    ];
    let saves: Vec<Vec<u8>> = (0..4)
        .map(|i| {
            let p = root.join(format!("again-{i}.safetensors"));
            save_model(&model, &p, &extra).unwrap();
            std::fs::read(p).unwrap()
        })
        .collect();
    assert!(saves.windows(2).all(|w| w[0] == w[1]));
    let again = rslad::models::load_model(&root.join("again-0.safetensors"), &device, None);
    assert_eq!(again.unwrap().spec, model.spec);

    let test = data::load(
        DatasetKind::FashionMnist,
        Some(&data),
        Split::Test,
        Some(10),
    )
    .unwrap();
    let loaded = rslad::models::load_model(&ckpt, &device, None).unwrap();
    let ctx = AttackContext {
        eps: 0.1,
        seed: 3,
        device: &device,
        target: &loaded.spec,
    };
    let list = attacks::parse_list("fgsm", &ctx).unwrap();
    let cfg = EvalConfig {
        eps: 0.1,
        batch_size: 4,
        seed: 3,
        sanity_checks: false,
    };
    let direct = eval::evaluate(
        &loaded,
        test.slice(3, 6),
        3,
        &list,
        &cfg,
        &device,
        &mut |_| {},
    );
    assert_eq!(r.clean, direct.clean);
    assert_eq!(r.attacks[0].robust, direct.attacks[0].robust);

    // A batch size of 0 is an error, not a panic or an empty result.
    let mut zero = request(&ckpt, &data, None);
    zero.batch_size = 0;
    let err = eval::prepare(zero, &device).err().expect("refused");
    assert!(matches!(err, EvalError::ZeroBatchSize), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}
