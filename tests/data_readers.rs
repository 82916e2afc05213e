//! The readers on files built here in the exact formats, good and broken.

mod common;

use common::*;
use rslad::data::{load, DataError, DatasetKind, Split};
use std::path::Path;

fn cifar_records(n: usize, label_bytes: &[u8], seed: u64) -> Vec<u8> {
    let mut rng = Lcg(seed);
    let mut out = Vec::new();
    for i in 0..n {
        out.extend_from_slice(label_bytes);
        for p in 0..3072 {
            out.push(((i * 7 + p + rng.below(3) as usize) % 256) as u8);
        }
    }
    out
}

fn write_cifar10(dir: &Path, per_file: usize) {
    for (k, name) in [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ]
    .iter()
    .enumerate()
    {
        let mut bytes = Vec::new();
        for i in 0..per_file {
            bytes.extend(cifar_records(
                1,
                &[((i + k) % 10) as u8],
                (k * 100 + i) as u64,
            ));
        }
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

#[test]
fn cifar10_good_files() {
    let dir = temp_dir("c10");
    write_cifar10(&dir, 3);
    let train = load(DatasetKind::Cifar10, Some(&dir), Split::Train, None).unwrap();
    assert_eq!(train.len(), 15);
    assert_eq!(train.shape.channels, 3);
    // File order: batch 1 records first; labels as written.
    assert_eq!(&train.labels[..4], &[0, 1, 2, 1]);
    let raw = std::fs::read(dir.join("data_batch_1.bin")).unwrap();
    assert_eq!(
        train.image(0),
        &raw[1..3073],
        "pixels stay in file order (R, G, B planes)"
    );
    let limited = load(DatasetKind::Cifar10, Some(&dir), Split::Train, Some(4)).unwrap();
    assert_eq!(limited.len(), 4);
    assert_eq!(limited.image(3), train.image(3));
    let test = load(DatasetKind::Cifar10, Some(&dir), Split::Test, None).unwrap();
    assert_eq!(test.labels, vec![5, 6, 7]);
}

#[test]
fn cifar100_uses_the_fine_label() {
    let dir = temp_dir("c100");
    let mut train = cifar_records(2, &[3, 77], 1);
    train.extend(cifar_records(1, &[19, 99], 2));
    std::fs::write(dir.join("train.bin"), &train).unwrap();
    std::fs::write(dir.join("test.bin"), cifar_records(1, &[0, 5], 3)).unwrap();
    let d = load(DatasetKind::Cifar100, Some(&dir), Split::Train, None).unwrap();
    assert_eq!(d.labels, vec![77, 77, 99]);
    assert_eq!(d.num_classes, 100);
    assert_eq!(d.image(2), &train[2 * 3074 + 2..3 * 3074]);
}

#[test]
fn idx_gzipped_and_plain() {
    for gz in [true, false] {
        let dir = temp_dir(&format!("idx-{gz}"));
        fake_fashion(&dir, 20, 7, gz);
        let train = load(DatasetKind::FashionMnist, Some(&dir), Split::Train, None).unwrap();
        let test = load(DatasetKind::FashionMnist, Some(&dir), Split::Test, Some(5)).unwrap();
        assert_eq!((train.len(), test.len()), (20, 5));
        assert_eq!(train.shape.height, 28);
        assert!(train.labels.iter().all(|&l| l < 10));
    }
}

/// Both forms of a file (`gunzip -k`) read when they agree, and are refused when they differ:
/// which one is read must never decide the data unseen.
#[test]
fn gzipped_and_plain_copies_must_agree() {
    let dir = temp_dir("idx-both");
    fake_fashion(&dir, 20, 7, true);
    fake_fashion(&dir, 20, 7, false);
    let gz = load(DatasetKind::FashionMnist, Some(&dir), Split::Train, None).unwrap();
    let plain = dir.join("train-images-idx3-ubyte");
    let mut bytes = std::fs::read(&plain).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&plain, bytes).unwrap();
    let e = err_of(DatasetKind::FashionMnist, &dir, Split::Train);
    assert!(
        e.contains("both there and hold different data") && e.contains("train-images-idx3-ubyte"),
        "{e}"
    );
    std::fs::remove_file(dir.join("train-images-idx3-ubyte.gz")).unwrap();
    let now = load(DatasetKind::FashionMnist, Some(&dir), Split::Train, None).unwrap();
    assert_ne!(now.sha256(), gz.sha256());
}

fn err_of(kind: DatasetKind, dir: &Path, split: Split) -> String {
    load(kind, Some(dir), split, None).unwrap_err().to_string()
}

#[test]
fn missing_files_are_named_with_the_fix() {
    let dir = temp_dir("missing");
    let e = err_of(DatasetKind::FashionMnist, &dir, Split::Train);
    assert!(
        e.contains("train-images-idx3-ubyte")
            && e.contains("apt-get install -y dataset-fashion-mnist"),
        "{e}"
    );
    let e = err_of(DatasetKind::Cifar10, &dir, Split::Train);
    assert!(
        e.contains("data_batch_1.bin") && e.contains("cifar-10-binary.tar.gz"),
        "{e}"
    );
    write_cifar10(&dir, 1);
    std::fs::remove_file(dir.join("data_batch_4.bin")).unwrap();
    let e = load(DatasetKind::Cifar10, Some(&dir), Split::Train, Some(1))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("data_batch_4.bin"),
        "a missing later file is reported even with a limit: {e}"
    );
    let e = err_of(DatasetKind::Cifar100, &dir, Split::Test);
    assert!(
        e.contains("test.bin") && e.contains("--dataset cifar10 "),
        "CIFAR-10's files given as CIFAR-100: {e}"
    );
    let e = err_of(DatasetKind::Cifar100, &dir.join("nowhere"), Split::Test);
    assert!(
        e.contains("does not exist") && e.contains("cifar-100-binary.tar.gz"),
        "{e}"
    );
    // The archive extracted into the folder named: the files are one level down.
    let parent = temp_dir("missing-parent");
    let inner = parent.join("fashion-mnist");
    std::fs::create_dir_all(&inner).unwrap();
    fake_fashion(&inner, 3, 3, true);
    let e = err_of(DatasetKind::FashionMnist, &parent, Split::Test);
    assert!(e.contains(&format!("It is in {}", inner.display())), "{e}");
    write_cifar10(&inner, 1);
    let e = err_of(DatasetKind::Cifar10, &parent, Split::Test);
    assert!(e.contains(&format!("It is in {}", inner.display())), "{e}");
}

#[test]
fn truncated_files() {
    let dir = temp_dir("trunc");
    write_cifar10(&dir, 2);
    let mut bytes = std::fs::read(dir.join("test_batch.bin")).unwrap();
    bytes.truncate(3073 + 100);
    std::fs::write(dir.join("test_batch.bin"), &bytes).unwrap();
    let e = load(DatasetKind::Cifar10, Some(&dir), Split::Test, None).unwrap_err();
    assert!(matches!(e, DataError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("test_batch.bin"));

    // IDX whose header promises more images than it holds.
    fake_fashion(&dir, 5, 5, false);
    let p = dir.join("t10k-images-idx3-ubyte");
    let mut b = std::fs::read(&p).unwrap();
    b.truncate(16 + 784 * 3);
    std::fs::write(&p, b).unwrap();
    let e = err_of(DatasetKind::FashionMnist, &dir, Split::Test);
    assert!(e.contains("truncated") && e.contains("t10k-images"), "{e}");

    // A gzip stream cut short.
    let dir = temp_dir("trunc-gz");
    fake_fashion(&dir, 50, 5, true);
    let p = dir.join("train-images-idx3-ubyte.gz");
    let b = std::fs::read(&p).unwrap();
    std::fs::write(&p, &b[..b.len() / 2]).unwrap();
    let e = err_of(DatasetKind::FashionMnist, &dir, Split::Train);
    assert!(e.contains("gzip") && e.contains("train-images"), "{e}");

    // Shorter than the header.
    std::fs::write(dir.join("t10k-labels-idx1-ubyte.gz"), []).unwrap();
    std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), [0, 0, 8]).unwrap();
    let e = err_of(DatasetKind::FashionMnist, &dir, Split::Test);
    assert!(e.contains("header"), "{e}");
}

#[test]
fn wrong_magic_and_dimensions() {
    let dir = temp_dir("magic");
    fake_fashion(&dir, 5, 5, false);
    // Labels file where the images file should be.
    std::fs::copy(
        dir.join("train-labels-idx1-ubyte"),
        dir.join("train-images-idx3-ubyte"),
    )
    .unwrap();
    let e = err_of(DatasetKind::FashionMnist, &dir, Split::Train);
    assert!(e.contains("magic") && e.contains("0x00000801"), "{e}");
    // 32×32 images.
    write_idx(
        &dir.join("t10k-images-idx3-ubyte"),
        0x803,
        &[5, 32, 32],
        &vec![0; 5 * 1024],
        false,
    );
    let e = err_of(DatasetKind::FashionMnist, &dir, Split::Test);
    assert!(e.contains("32×32") && e.contains("28×28"), "{e}");
}

#[test]
fn labels_out_of_range() {
    let dir = temp_dir("labels");
    write_cifar10(&dir, 2);
    let mut bad = cifar_records(1, &[3], 1);
    bad.extend(cifar_records(1, &[10], 2));
    std::fs::write(dir.join("test_batch.bin"), bad).unwrap();
    let e = err_of(DatasetKind::Cifar10, &dir, Split::Test);
    assert!(e.contains("record 1") && e.contains("label 10"), "{e}");

    std::fs::write(dir.join("test.bin"), cifar_records(1, &[2, 100], 1)).unwrap();
    let e = err_of(DatasetKind::Cifar100, &dir, Split::Test);
    assert!(e.contains("label 100"), "{e}");

    fake_fashion(&dir, 3, 3, false);
    write_idx(
        &dir.join("t10k-labels-idx1-ubyte"),
        0x801,
        &[3],
        &[1, 12, 3],
        false,
    );
    let e = err_of(DatasetKind::FashionMnist, &dir, Split::Test);
    assert!(e.contains("label 12"), "{e}");
}

#[test]
fn image_and_label_counts_must_agree() {
    let dir = temp_dir("count");
    fake_fashion(&dir, 6, 3, true);
    let labels: Vec<u8> = vec![1; 5];
    write_idx(
        &dir.join("train-labels-idx1-ubyte.gz"),
        0x801,
        &[5],
        &labels,
        true,
    );
    let e = err_of(DatasetKind::FashionMnist, &dir, Split::Train);
    assert!(e.contains("6 images") && e.contains("5 labels"), "{e}");
}

#[test]
fn unknown_dataset_name() {
    let e = "mnist-3d".parse::<DatasetKind>().unwrap_err().to_string();
    assert!(e.contains("fashion-mnist"), "{e}");
}
