//! The examples' "model": a small multi-layer perceptron with seeded random
//! weights, computed in f32, shared by the axum and the tonic example.
//!
//! Each dense layer is one matrix-matrix product (`ndarray`'s f32 `dot`, which
//! runs on `matrixmultiply`'s sgemm), so a batch of N inputs reads every
//! weight once for all N rows. That is what makes batching pay off here, as
//! it does for a real model: a batch of one is bound by reading ~25 MB of
//! weights; a batch of 32 reads them once and does 32 rows of arithmetic.

use std::fmt;

use ndarray::{Array1, Array2, Axis};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// Width of one input vector of the default model.
pub const INPUT_DIM: usize = 1024;
/// Width of the hidden layers of the default model.
pub const HIDDEN_DIM: usize = 2048;
/// Width of one output vector of the default model.
pub const OUTPUT_DIM: usize = 16;

/// A dense feed-forward network: `x -> relu(x·W1 + b1) -> ... -> x·Wn + bn`.
#[derive(Clone)]
pub struct Mlp {
    layers: Vec<Dense>,
}

#[derive(Clone)]
struct Dense {
    /// `in × out`, row-major, so a batch `N × in` times this is `N × out`.
    weights: Array2<f32>,
    bias: Array1<f32>,
    relu: bool,
}

impl fmt::Debug for Mlp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mlp")
            .field("dims", &self.dims())
            .field("parameters", &self.parameter_count())
            .finish()
    }
}

/// The layer widths given to [`Mlp::seeded`] cannot make a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidDims {
    _p: (),
}

impl fmt::Display for InvalidDims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an MLP needs at least two layer widths, all non-zero")
    }
}

impl std::error::Error for InvalidDims {}

impl Mlp {
    /// The default model, 1024→2048→2048→16 (about 6.3 M parameters, 25 MB).
    pub fn default_model(seed: u64) -> Self {
        Self::seeded(&[INPUT_DIM, HIDDEN_DIM, HIDDEN_DIM, OUTPUT_DIM], seed)
            .expect("the default widths are valid")
    }

    /// A network with the given layer widths (input first, output last),
    /// weights drawn He-uniform from a RNG seeded with `seed`, ReLU between
    /// layers and none after the last.
    pub fn seeded(dims: &[usize], seed: u64) -> Result<Self, InvalidDims> {
        if dims.len() < 2 || dims.contains(&0) {
            return Err(InvalidDims { _p: () });
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let last = dims.len() - 2;
        let layers = dims
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                let (fan_in, fan_out) = (w[0], w[1]);
                let bound = (6.0 / fan_in as f32).sqrt();
                let weights = Array2::from_shape_simple_fn((fan_in, fan_out), || {
                    rng.random_range(-bound..bound)
                });
                let bias = Array1::from_shape_simple_fn(fan_out, || rng.random_range(-0.1..0.1));
                Dense {
                    weights,
                    bias,
                    relu: i != last,
                }
            })
            .collect();
        Ok(Self { layers })
    }

    /// Width of one input vector.
    pub fn input_dim(&self) -> usize {
        self.layers[0].weights.nrows()
    }

    /// Width of one output vector.
    pub fn output_dim(&self) -> usize {
        self.layers[self.layers.len() - 1].weights.ncols()
    }

    /// The layer widths, input first.
    pub fn dims(&self) -> Vec<usize> {
        std::iter::once(self.input_dim())
            .chain(self.layers.iter().map(|l| l.weights.ncols()))
            .collect()
    }

    /// Number of weights and biases.
    pub fn parameter_count(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.weights.len() + l.bias.len())
            .sum()
    }

    /// Runs a batch: `inputs` is `N × input_dim` row-major; returns
    /// `N × output_dim`. Each layer is one sgemm over the whole batch.
    ///
    /// # Panics
    /// If `inputs` does not have `input_dim` columns (callers validate first).
    pub fn forward(&self, inputs: Array2<f32>) -> Array2<f32> {
        assert_eq!(inputs.ncols(), self.input_dim(), "input width");
        self.layers.iter().fold(inputs, |x, layer| {
            let mut y = x.dot(&layer.weights);
            y += &layer.bias.view().insert_axis(Axis(0));
            if layer.relu {
                y.mapv_inplace(|v| v.max(0.0));
            }
            y
        })
    }

    /// Runs one batch of independent items and answers one output per item,
    /// in order. An item of the wrong width gets an error and does not stop
    /// the others.
    pub fn infer_batch(&self, items: Vec<Vec<f32>>) -> Vec<Result<Vec<f32>, InputWidth>> {
        let width = self.input_dim();
        let valid: Vec<usize> = (0..items.len())
            .filter(|&i| items[i].len() == width)
            .collect();
        let mut flat = Vec::with_capacity(valid.len() * width);
        for &i in &valid {
            flat.extend_from_slice(&items[i]);
        }
        let mut answers: Vec<Result<Vec<f32>, InputWidth>> = items
            .iter()
            .map(|item| {
                Err(InputWidth {
                    expected: width,
                    got: item.len(),
                })
            })
            .collect();
        if valid.is_empty() {
            return answers;
        }
        let batch = Array2::from_shape_vec((valid.len(), width), flat)
            .expect("rows × width elements were copied");
        let out = self.forward(batch);
        for (row, &i) in out.rows().into_iter().zip(&valid) {
            answers[i] = Ok(row.to_vec());
        }
        answers
    }

    /// Runs a single item (a batch of one).
    pub fn infer_one(&self, item: Vec<f32>) -> Result<Vec<f32>, InputWidth> {
        self.infer_batch(vec![item])
            .pop()
            .expect("one answer per item")
    }
}

/// An input vector had the wrong number of elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputWidth {
    /// The model's input width.
    pub expected: usize,
    /// The width that was given.
    pub got: usize,
}

impl fmt::Display for InputWidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`inputs` must hold exactly {} numbers, got {}",
            self.expected, self.got
        )
    }
}

impl std::error::Error for InputWidth {}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Mlp {
        Mlp::seeded(&[8, 16, 4], 7).unwrap()
    }

    fn input(seed: u64, width: usize) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..width).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    /// The reference: the same network computed with plain loops.
    fn naive(model: &Mlp, x: &[f32]) -> Vec<f32> {
        let mut x = x.to_vec();
        for layer in &model.layers {
            let (fan_in, fan_out) = layer.weights.dim();
            let mut y = layer.bias.to_vec();
            for (o, y) in y.iter_mut().enumerate().take(fan_out) {
                for (i, x) in x.iter().enumerate().take(fan_in) {
                    *y += x * layer.weights[[i, o]];
                }
                if layer.relu {
                    *y = y.max(0.0);
                }
            }
            x = y;
        }
        x
    }

    #[test]
    fn rejects_impossible_dims() {
        assert!(Mlp::seeded(&[8], 1).is_err());
        assert!(Mlp::seeded(&[8, 0, 4], 1).is_err());
        assert!(Mlp::seeded(&[], 1).is_err());
    }

    #[test]
    fn same_seed_same_weights() {
        let a = Mlp::seeded(&[8, 16, 4], 3).unwrap();
        let b = Mlp::seeded(&[8, 16, 4], 3).unwrap();
        let c = Mlp::seeded(&[8, 16, 4], 4).unwrap();
        let x = input(1, 8);
        assert_eq!(a.infer_one(x.clone()), b.infer_one(x.clone()));
        assert_ne!(a.infer_one(x.clone()), c.infer_one(x));
    }

    #[test]
    fn matches_naive_reference() {
        let model = small();
        for seed in 0..8 {
            let x = input(seed, 8);
            let fast = model.infer_one(x.clone()).unwrap();
            let slow = naive(&model, &x);
            assert_eq!(fast.len(), 4);
            for (a, b) in fast.iter().zip(&slow) {
                assert!((a - b).abs() < 1e-4, "{fast:?} vs {slow:?}");
            }
        }
    }

    #[test]
    fn batch_rows_equal_single_runs() {
        let model = small();
        let items: Vec<Vec<f32>> = (0..5).map(|s| input(s, 8)).collect();
        let batched = model.infer_batch(items.clone());
        for (item, out) in items.into_iter().zip(batched) {
            let single = model.infer_one(item).unwrap();
            for (a, b) in single.iter().zip(&out.unwrap()) {
                assert!((a - b).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn wrong_width_fails_alone() {
        let model = small();
        let out = model.infer_batch(vec![input(1, 8), vec![1.0; 3], input(2, 8)]);
        assert!(out[0].is_ok());
        assert_eq!(
            out[1],
            Err(InputWidth {
                expected: 8,
                got: 3
            })
        );
        assert!(out[2].is_ok());
    }

    #[test]
    fn default_model_shape() {
        let model = Mlp::seeded(&[INPUT_DIM, 64, OUTPUT_DIM], 1).unwrap();
        assert_eq!(model.dims(), vec![INPUT_DIM, 64, OUTPUT_DIM]);
        assert_eq!(
            model.parameter_count(),
            INPUT_DIM * 64 + 64 + 64 * OUTPUT_DIM + OUTPUT_DIM
        );
    }
}
