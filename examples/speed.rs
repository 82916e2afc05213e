use burn::module::Module;
use burn::optim::GradientsParams;
use burn::prelude::*;
use rslad::data::DatasetKind;
use rslad::models::ModelSpec;
use rslad::train::sgd::Sgd;
use std::time::Instant;
fn main() {
    rslad::backend::init();
    let args: Vec<String> = std::env::args().collect();
    let name = &args[1];
    let b: usize = args[2].parse().unwrap();
    let ds = if name.starts_with("cnn") {
        DatasetKind::FashionMnist
    } else {
        DatasetKind::Cifar10
    };
    let device = Device::flex();
    let spec = ModelSpec::for_dataset(name.parse().unwrap(), ds);
    let mut model = spec.build(&device.clone().autodiff()).unwrap();
    let s = ds.shape();
    let x = Tensor::<4>::random(
        [b, s.channels, s.height, s.width],
        burn::tensor::Distribution::Uniform(0.0, 1.0),
        &device,
    );
    let y = Tensor::<1, Int>::from_data(
        TensorData::new((0..b as i64).map(|i| i % 10).collect::<Vec<_>>(), [b]),
        &device,
    );
    let mut sgd = Sgd::new(0.9, 5e-4);
    let mut times = vec![];
    for _ in 0..6 {
        let t = Instant::now();
        let logits = model.forward(x.clone().autodiff());
        let loss = rslad::attacks::losses::cross_entropy(logits, y.clone().autodiff()).mean();
        let g = GradientsParams::from_grads(loss.backward(), &model);
        model = sgd.step(0.1, model, g);
        device.sync().unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("train {name} b{b}: median {:.1} ms", times[3]);
    let v = model.valid();
    let mut times = vec![];
    for _ in 0..6 {
        let t = Instant::now();
        let xa = x.clone().autodiff().require_grad();
        let l = rslad::attacks::losses::cross_entropy(v.forward(xa.clone()), y.clone()).sum();
        let g = xa.grad(&l.backward()).unwrap();
        let _ = g.sign();
        device.sync().unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("pgd step {name} b{b}: median {:.1} ms", times[3]);
    let mut times = vec![];
    for _ in 0..6 {
        let t = Instant::now();
        let _ = v.forward(x.clone()).into_data();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("eval {name} b{b}: median {:.1} ms", times[3]);
}
