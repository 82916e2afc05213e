//! SGD with momentum and weight decay in PyTorch's form (the paper's numbers assume it):
//! d = g + wd·w; v = d on the first step, then v = μ·v + d (no dampening, not Nesterov);
//! w ← w − lr·v. The velocity is keyed by the parameter's path, so it can be saved and
//! restored across processes (burn's optimizer keys it by in-process parameter ids).

use burn::module::{Module, ModuleMapper, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct Sgd {
    pub momentum: f64,
    pub weight_decay: f64,
    /// Flattened velocity per parameter path.
    pub velocity: BTreeMap<String, Tensor<1>>,
}

impl Sgd {
    pub fn new(momentum: f64, weight_decay: f64) -> Self {
        Sgd {
            momentum,
            weight_decay,
            velocity: BTreeMap::new(),
        }
    }

    /// One update of every parameter that has a gradient in `grads`.
    pub fn step<M: Module>(&mut self, lr: f64, module: M, grads: GradientsParams) -> M {
        let mut mapper = SgdMapper {
            sgd: self,
            grads,
            lr,
            path: Vec::new(),
        };
        module.map(&mut mapper)
    }
}

/// Element count of every parameter, keyed by its path as the velocity is (to check a
/// velocity read from disk against the model before it is used).
pub fn parameter_sizes<M: Module>(module: &M) -> BTreeMap<String, usize> {
    struct Sizes {
        path: Vec<String>,
        out: BTreeMap<String, usize>,
    }
    impl burn::module::ModuleVisitor for Sizes {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.out
                .insert(self.path.join("."), param.val().shape().num_elements());
        }
    }
    let mut v = Sizes {
        path: Vec::new(),
        out: BTreeMap::new(),
    };
    module.visit(&mut v);
    v.out
}

struct SgdMapper<'a> {
    sgd: &'a mut Sgd,
    grads: GradientsParams,
    lr: f64,
    path: Vec<String>,
}

impl ModuleMapper for SgdMapper<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(grad) = self.grads.remove::<D>(param.id) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let weight = tensor.inner();
        let shape = weight.shape();
        let n = shape.num_elements();
        let grad = grad.inner().reshape([n]);
        let flat = weight.clone().reshape([n]);
        let d = if self.sgd.weight_decay != 0.0 {
            grad + flat.clone().mul_scalar(self.sgd.weight_decay)
        } else {
            grad
        };
        let key = self.path.join(".");
        let v = match self.sgd.velocity.remove(&key) {
            Some(v) if self.sgd.momentum != 0.0 => v.mul_scalar(self.sgd.momentum) + d,
            _ => d,
        };
        let updated = (flat - v.clone().mul_scalar(self.lr)).reshape(shape);
        if self.sgd.momentum != 0.0 {
            self.sgd.velocity.insert(key, v);
        }
        let mut t = Tensor::from_inner(updated);
        if require_grad {
            t = t.require_grad();
        }
        Param::from_mapped_value(id, t, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};

    /// Two steps on a linear layer against the update written out by hand (PyTorch's rule).
    #[test]
    fn matches_pytorch_update_rule() {
        let device = Device::default().autodiff();
        device.seed(0);
        let layer: Linear = LinearConfig::new(3, 2).init(&device);
        let w0: Vec<f32> = layer.weight.val().into_data().try_into_vec_as().unwrap();
        let x = Tensor::<2>::from_floats([[1.0, -2.0, 0.5]], &device);
        let (lr, mu, wd) = (0.1, 0.9, 0.01);
        let mut sgd = Sgd::new(mu, wd);
        let mut model = layer;
        let mut w = w0.iter().map(|&v| v as f64).collect::<Vec<_>>();
        let mut v = vec![0f64; w.len()];
        for step in 0..2 {
            let loss = model.forward(x.clone()).sum();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = sgd.step(lr, model, grads);
            // d(sum(xW + b))/dW[i][j] = x[i] (burn's Linear weight is [in, out]).
            let xs = [1.0, -2.0, 0.5];
            for (i, &xi) in xs.iter().enumerate() {
                for j in 0..2 {
                    let k = i * 2 + j;
                    let d = xi + wd * w[k];
                    v[k] = if step == 0 { d } else { mu * v[k] + d };
                    w[k] -= lr * v[k];
                }
            }
        }
        let got: Vec<f32> = model.weight.val().into_data().try_into_vec_as().unwrap();
        for (g, e) in got.iter().zip(&w) {
            assert!((*g as f64 - e).abs() < 1e-5, "{got:?} vs {w:?}");
        }
        assert!(model.weight.val().is_require_grad());
    }
}
