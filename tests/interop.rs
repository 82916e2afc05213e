//! Weights in and out: export → import round trips for every model family, hostile and broken
//! PyTorch files, and (where PyTorch is installed) logits against the reference definitions.

mod common;

use burn::module::Module;
use burn::prelude::*;
use burn::store::ModuleSnapshot;
use common::*;
use rslad::data::DatasetKind;
use rslad::interop::{self, Layout};
use rslad::models::{Classifier, Model, ModelSpec};
use std::io::Write;
use std::path::Path;
use std::process::Command;

fn tensors(m: &Model) -> Vec<(String, Vec<u8>)> {
    m.valid()
        .collect(None, None, true)
        .into_iter()
        .map(|t| (t.name.clone(), t.to_bytes().unwrap().to_vec()))
        .collect()
}

fn randomised(spec: &ModelSpec, seed: u64) -> Model {
    let device = device();
    device.seed(seed);
    let model = spec.build(&device).unwrap();
    // Non-trivial BatchNorm statistics, so that a mix-up of buffers shows in the logits.
    let mut store = burn::store::SafetensorsStore::from_bytes(None).skip_enum_variants(true);
    model.save_into(&mut store).unwrap();
    let mut rng = Lcg(seed);
    let bytes = store.get_bytes().unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        let mut data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        if name.contains("running_var") || name.ends_with("gamma") {
            data.iter_mut().for_each(|v| *v = 0.5 + rng.next_f32());
        } else if name.contains("running_mean") || name.ends_with("beta") {
            data.iter_mut()
                .for_each(|v| *v = 0.4 * (rng.next_f32() - 0.5));
        }
        owned.push((
            name,
            view.shape().to_vec(),
            data.iter().flat_map(|f| f.to_le_bytes()).collect(),
        ));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    let mut model = model;
    model
        .load_from(
            &mut burn::store::SafetensorsStore::from_bytes(Some(bytes)).skip_enum_variants(true),
        )
        .unwrap();
    model
}

fn input(spec: &ModelSpec) -> Tensor<4> {
    let mut rng = Lcg(77);
    let s = spec.input;
    let v: Vec<f32> = (0..2 * s.len()).map(|_| rng.next_f32()).collect();
    tensor4(v, [2, s.channels, s.height, s.width])
}

/// Export then import gives bit-identical weights and identical logits, for every family.
#[test]
fn export_import_round_trip_for_every_model() {
    let dir = temp_dir("roundtrip");
    for (name, dataset) in [
        ("cnn-small", DatasetKind::FashionMnist),
        ("cnn-large", DatasetKind::FashionMnist),
        ("resnet18", DatasetKind::Cifar10),
        ("resnet50", DatasetKind::Cifar100),
        ("mobilenetv2", DatasetKind::Cifar10),
        ("wrn-16-2", DatasetKind::Cifar10),
        ("wrn-34-10", DatasetKind::Cifar10),
        ("wrn-16-2-dm", DatasetKind::Cifar100),
        ("wrn-10-2-dm-relu", DatasetKind::Cifar10),
    ] {
        let spec = ModelSpec::for_dataset(name.parse().unwrap(), dataset);
        let model = randomised(&spec, 3);
        let path = dir.join(format!("{name}.safetensors"));
        interop::export_torch(&model, &path, None).unwrap();
        let (back, report) = interop::import(&path, &spec, None, &device()).unwrap();
        assert!(
            report
                .ignored
                .iter()
                .all(|k| k.ends_with("num_batches_tracked") || k.starts_with("sub_block1.")),
            "{name}"
        );
        assert_eq!(tensors(&model), tensors(&back), "{name}: weights");
        let x = input(&spec);
        assert_eq!(
            floats(model.valid().logits(x.clone())),
            floats(back.valid().logits(x)),
            "{name}: logits"
        );
    }
}

#[test]
fn wrong_model_or_layout_lists_every_problem() {
    let dir = temp_dir("mismatch");
    let spec = ModelSpec::for_dataset("resnet18".parse().unwrap(), DatasetKind::Cifar10);
    let path = dir.join("r18.safetensors");
    interop::export_torch(&randomised(&spec, 1), &path, None).unwrap();
    let other = ModelSpec::for_dataset("mobilenetv2".parse().unwrap(), DatasetKind::Cifar10);
    let e = interop::import(&path, &other, None, &device())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("missing: layers.0.conv1.weight")
            && e.contains("unexpected: layer1.0.conv1.weight"),
        "{e}"
    );
    let c100 = ModelSpec::for_dataset("resnet18".parse().unwrap(), DatasetKind::Cifar100);
    let e = interop::import(&path, &c100, None, &device())
        .unwrap_err()
        .to_string();
    assert!(e.contains("wrong shape: linear.weight is [10, 512]"), "{e}");
    let e = interop::import(&path, &spec, Some(Layout::Trades), &device())
        .unwrap_err()
        .to_string();
    assert!(e.contains("layout"), "{e}");
    // A NaN weight is named, not imported.
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    let target = owned
        .iter_mut()
        .find(|t| t.0 == "linear.weight")
        .expect("linear.weight exported");
    target.3[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, dtype, shape, d)| {
            let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), d);
            (n.clone(), view.unwrap())
        })
        .collect();
    let nan = dir.join("nan.safetensors");
    std::fs::write(&nan, safetensors::serialize(views, None).unwrap()).unwrap();
    let e = interop::import(&nan, &spec, None, &device())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not finite: linear.weight"), "{e}");
}

/// A minimal `torch.save` zip: `data.pkl` (given) and one storage `data/0` of `storage` bytes.
fn torch_zip(path: &Path, pickle: &[u8], storage: &[u8]) {
    let file = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in [
        ("archive/data.pkl", pickle),
        ("archive/data/0", storage),
        ("archive/version", b"3\n".as_slice()),
        ("archive/byteorder", b"little"),
    ] {
        zip.start_file(name, opts).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap();
}

fn unicode(s: &str) -> Vec<u8> {
    let mut v = vec![b'X'];
    v.extend((s.len() as u32).to_le_bytes());
    v.extend(s.as_bytes());
    v
}

/// The pickle of `{"w": tensor of shape [2, 2] in storage "0" with `numel` floats}`.
fn state_dict_pickle(numel: u8) -> Vec<u8> {
    let mut p = b"\x80\x02ccollections\nOrderedDict\n)R".to_vec();
    p.extend(unicode("w"));
    p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
    p.extend(b"(");
    p.extend(unicode("storage"));
    p.extend(b"ctorch\nFloatStorage\n");
    p.extend(unicode("0"));
    p.extend(unicode("cpu"));
    p.extend([b'K', numel, b't', b'Q']);
    p.extend(b"K\x00K\x02K\x02\x86K\x02K\x01\x86\x89ccollections\nOrderedDict\n)RtRs.");
    p
}

#[test]
fn hostile_and_broken_pytorch_files_are_refused() {
    let dir = temp_dir("hostile");
    let spec = ModelSpec::for_dataset("cnn-small".parse().unwrap(), DatasetKind::FashionMnist);
    let storage: Vec<u8> = [1f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|f| f.to_le_bytes())
        .collect();

    // A well-formed file reads (and then fails only for not being cnn-small).
    let good = dir.join("good.pt");
    torch_zip(&good, &state_dict_pickle(4), &storage);
    let t = interop::read_source(&good).unwrap();
    assert_eq!(
        t["w"].data.as_deref(),
        Some([1f32, 2.0, 3.0, 4.0].as_slice())
    );

    // A pickle that would run a shell command when unpickled.
    let marker = dir.join("pwned");
    let mut evil = b"\x80\x02cposix\nsystem\n".to_vec();
    evil.extend(unicode(&format!("touch {}", marker.display())));
    evil.extend(b"\x85R.");
    let path = dir.join("evil.pt");
    torch_zip(&path, &evil, &storage);
    let e = interop::import(&path, &spec, None, &device())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unsafe pickle") && e.contains("posix.system"),
        "{e}"
    );
    assert!(!marker.exists(), "nothing was executed");

    // The same through protocol 4's STACK_GLOBAL.
    let mut evil4 = b"\x80\x04\x8c\x08builtins\x94\x8c\x04exec\x94\x93".to_vec();
    evil4.extend(unicode("import os"));
    evil4.extend(b"\x85R.");
    torch_zip(&path, &evil4, &storage);
    let e = interop::import(&path, &spec, None, &device())
        .unwrap_err()
        .to_string();
    assert!(e.contains("builtins.exec"), "{e}");

    // A truncated zip.
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.join("cut.pt");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = interop::import(&cut, &spec, None, &device())
        .unwrap_err()
        .to_string();
    assert!(e.contains("cut.pt") && e.contains("truncated"), "{e}");

    // A tensor whose storage is shorter than its shape needs.
    let short = dir.join("short.pt");
    torch_zip(&short, &state_dict_pickle(4), &storage[..8]);
    let e = interop::read_source(&short)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("short.pt"), "{e}");

    // Not a checkpoint at all.
    let junk = dir.join("junk.pt");
    std::fs::write(&junk, b"hello").unwrap();
    assert!(interop::import(&junk, &spec, None, &device()).is_err());
    let e = interop::import(&dir.join("none.pt"), &spec, None, &device())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not found"), "{e}");
}

fn torch_available() -> bool {
    Command::new("python3")
        .args(["-c", "import torch"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Each reference architecture built in PyTorch with random weights, saved in the forms users
/// meet (plain, DataParallel under "state_dict", legacy pre-1.6 format), imported here: the
/// logits agree within 1e-4. Then rslad's exports load into PyTorch with strict=True and give
/// the same logits back.
#[test]
fn pytorch_reference_logits_match() {
    if !torch_available() {
        eprintln!("SKIPPED: python3 cannot import torch (CI installs it; see .ci/run)");
        return;
    }
    let dir = temp_dir("pytorch-ref");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/reference_models.py");
    let o = Command::new("python3")
        .arg(&script)
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (case, dataset) in [
        ("resnet18", DatasetKind::Cifar10),
        ("resnet50", DatasetKind::Cifar10),
        ("mobilenetv2", DatasetKind::Cifar100),
        ("wrn-16-4", DatasetKind::Cifar10),
        ("wrn-16-2-dm", DatasetKind::Cifar100),
        ("cnn-small", DatasetKind::FashionMnist),
    ] {
        let spec = ModelSpec::for_dataset(case.parse().unwrap(), dataset);
        let (model, report) =
            interop::import(&dir.join(format!("{case}.pt")), &spec, None, &device())
                .unwrap_or_else(|e| panic!("{case}: {e}"));
        if case == "wrn-16-4" {
            assert!(report.ignored.iter().any(|k| k.starts_with("sub_block1.")));
        }
        let io = interop::read_source(&dir.join(format!("{case}.io.pt"))).unwrap();
        let x = io["x"].data.clone().unwrap();
        let shape: [usize; 4] = io["x"].shape.clone().try_into().unwrap();
        let want = io["logits"].data.clone().unwrap();
        let got = floats(model.valid().logits(tensor4(x, shape)));
        let diff = max_abs_diff(&got, &want);
        eprintln!("{case}: max |logit difference| rslad vs PyTorch = {diff:.2e}");
        assert!(diff < 1e-4, "{case}: {diff}");
        interop::export_torch(
            &model,
            &dir.join(format!("{case}.export.safetensors")),
            None,
        )
        .unwrap();
    }
    let o = Command::new("python3")
        .arg(&script)
        .arg(&dir)
        .arg("check-exports")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "strict load of the exports: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    for case in [
        "resnet18",
        "resnet50",
        "mobilenetv2",
        "wrn-16-4",
        "wrn-16-2-dm",
        "cnn-small",
    ] {
        let want = interop::read_source(&dir.join(format!("{case}.io.pt"))).unwrap()["logits"]
            .data
            .clone()
            .unwrap();
        let back = interop::read_source(&dir.join(format!("{case}.export-logits.pt"))).unwrap()
            ["logits"]
            .data
            .clone()
            .unwrap();
        let diff = max_abs_diff(&back, &want);
        assert!(
            diff < 1e-5,
            "{case} exported and reloaded in PyTorch: {diff}"
        );
    }
}

#[cfg(feature = "onnx")]
fn onnxruntime_available() -> bool {
    Command::new("python3")
        .args(["-c", "import onnxruntime"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The ONNX export of each student and teacher family, run in onnxruntime at a batch size
/// other than the two it was captured at, gives rslad's eval-mode logits within 1e-4.
#[cfg(feature = "onnx")]
#[test]
fn onnx_export_matches_in_onnxruntime() {
    if !onnxruntime_available() {
        eprintln!("SKIPPED: python3 cannot import onnxruntime (CI installs it; see .ci/run)");
        return;
    }
    let dir = temp_dir("onnx");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/onnx_run.py");
    for (name, dataset) in [
        ("cnn-small", DatasetKind::FashionMnist),
        ("cnn-large", DatasetKind::FashionMnist),
        ("resnet18", DatasetKind::Cifar10),
        ("mobilenetv2", DatasetKind::Cifar100),
        ("wrn-16-2", DatasetKind::Cifar10),
        ("wrn-16-2-dm", DatasetKind::Cifar100),
    ] {
        let spec = ModelSpec::for_dataset(name.parse().unwrap(), dataset);
        let model = randomised(&spec, 5);
        let onnx = dir.join(format!("{name}.onnx"));
        interop::export_onnx(&model, &onnx).unwrap_or_else(|e| panic!("{name}: {e}"));
        let s = spec.input;
        let mut rng = Lcg(11);
        let x: Vec<f32> = (0..3 * s.len()).map(|_| rng.next_f32()).collect();
        let want = floats(
            model
                .valid()
                .logits(tensor4(x.clone(), [3, s.channels, s.height, s.width])),
        );
        let (inp, out) = (
            dir.join(format!("{name}.in")),
            dir.join(format!("{name}.out")),
        );
        std::fs::write(
            &inp,
            x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
        )
        .unwrap();
        let o = Command::new("python3")
            .arg(&script)
            .arg(&onnx)
            .arg(&inp)
            .arg(format!("3,{},{},{}", s.channels, s.height, s.width))
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let got: Vec<f32> = std::fs::read(&out)
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(got.len(), want.len(), "{name}: logits shape");
        let diff = max_abs_diff(&got, &want);
        eprintln!("{name}: max |logit difference| rslad vs onnxruntime = {diff:.2e}");
        assert!(diff < 1e-4, "{name}: {diff}");
    }
}
