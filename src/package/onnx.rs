//! The U-Net as an ONNX graph, written from the network's definition ([`ModelConfig`]) and a
//! run's weights, with no Python and no libtorch: what `segtop package` ships.
//!
//! The graph is the network's inference pass exactly as the trainer's `UNet::forward_all`
//! computes it with `train = false`: convolutions with their biases, the normalisation
//! (instance norm as `InstanceNormalization`, batch norm with its running statistics, group
//! norm as an instance norm over groups then the per-channel scale and shift), the activation,
//! max pooling, transposed convolutions (or trilinear up-sampling to the skip's size and a
//! 1x1x1 convolution), the skip concatenations, the 1x1x1 classifier, and last the softmax
//! over labels or a sigmoid per region. Dropout and deep supervision heads take no part in
//! inference and are left out.
//!
//! Input `image`: `[batch, channels, z, y, x]` float32 (a NIfTI array `[x, y, z]` transposed),
//! every spatial size a multiple of 2^(depth - 1). Output `probabilities`: `[batch, 4 labels or
//! 3 regions, z, y, x]`. Initializers keep the weights' names (`enc.0.0.weight`, ...), so the
//! file is also where `segtop predict --package` reads the weights back from
//! ([`read_initializers`]).
//!
//! The protocol-buffer messages are the part of `onnx.proto` (IR version 8, opset 17) the graph
//! needs, encoded by `prost`; field numbers are those of the ONNX specification.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use prost::Message;

use crate::experiment::{Activation, ModelConfig, Norm, Output, Upsample};

/// ONNX IR version 8 (ONNX 1.10 onwards), which opset 17 needs.
pub const IR_VERSION: i64 = 8;
/// The ONNX operator set the graph uses.
pub const OPSET: i64 = 17;
/// The graph's input and output names.
pub const INPUT: &str = "image";
pub const OUTPUT: &str = "probabilities";

/// `epsilon` of every normalisation, libtorch's default.
const NORM_EPSILON: f32 = 1e-5;
/// Slope below zero of the leaky ReLU, libtorch's default.
const LEAKY_SLOPE: f32 = 0.01;

/// `TensorProto.DataType` values used here.
const FLOAT: i32 = 1;
const INT64: i32 = 7;

/// `AttributeProto.AttributeType` values used here.
const ATTRIBUTE_FLOAT: i32 = 1;
const ATTRIBUTE_INT: i32 = 2;
const ATTRIBUTE_STRING: i32 = 3;
const ATTRIBUTE_INTS: i32 = 7;

#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    #[prost(string, tag = "2")]
    pub producer_name: String,
    #[prost(string, tag = "3")]
    pub producer_version: String,
    #[prost(string, tag = "6")]
    pub doc_string: String,
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(int64, tag = "2")]
    pub version: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct StringStringEntryProto {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub op_type: String,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct AttributeProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(int32, tag = "20")]
    pub r#type: i32,
    #[prost(float, tag = "2")]
    pub f: f32,
    #[prost(int64, tag = "3")]
    pub i: i64,
    #[prost(bytes = "vec", tag = "4")]
    pub s: Vec<u8>,
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ValueInfoProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TypeProto {
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TensorTypeProto>,
}

/// `TypeProto.Tensor`.
#[derive(Clone, PartialEq, Message)]
pub struct TensorTypeProto {
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

/// `TensorShapeProto.Dimension`: a fixed size or a named, free one.
#[derive(Clone, PartialEq, Message)]
pub struct Dimension {
    #[prost(int64, optional, tag = "1")]
    pub dim_value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    pub dim_param: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    #[prost(int64, repeated, tag = "7")]
    pub int64_data: Vec<i64>,
    #[prost(string, tag = "8")]
    pub name: String,
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
}

/// What went wrong turning weights into a graph, or reading one back.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error(
        "{source_name}: no tensor '{name}', which the network needs ({expected:?}); are these the weights of this experiment's network?"
    )]
    Missing {
        source_name: String,
        name: String,
        expected: Vec<usize>,
    },
    #[error("{source_name}: tensor '{name}' has shape {found:?}, the network needs {expected:?}")]
    Shape {
        source_name: String,
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("{source_name}: tensors the network does not have: {names}")]
    Unused { source_name: String, names: String },
    #[error("{path}: {message}")]
    File { path: String, message: String },
}

/// Float32 tensors by name: each its shape and values (row-major).
pub type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// A run's weights, as the trainer's checkpoints store them.
#[derive(Debug, Clone, Default)]
pub struct Weights {
    /// Where they came from, for messages.
    pub source: String,
    pub tensors: Tensors,
}

impl Weights {
    /// Reads a `.safetensors` checkpoint; every tensor must be float32.
    pub fn read_safetensors(path: &Path) -> Result<Weights, OnnxError> {
        let file_error = |message: String| OnnxError::File {
            path: path.display().to_string(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| file_error(format!("cannot read: {e}")))?;
        let file = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| file_error(format!("not a safetensors file: {e}")))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in file.tensors() {
            if view.dtype() != safetensors::Dtype::F32 {
                return Err(file_error(format!(
                    "tensor '{name}' is {:?}; checkpoints hold float32",
                    view.dtype()
                )));
            }
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            tensors.insert(name, (view.shape().to_vec(), values));
        }
        Ok(Weights {
            source: path.display().to_string(),
            tensors,
        })
    }
}

/// Builds the ONNX model of the network `config` describes for `in_channels` inputs, with
/// `weights`. Every tensor the network needs must be there in its shape, and every tensor
/// there must be the network's (deep supervision heads aside).
pub fn export(
    config: &ModelConfig,
    in_channels: usize,
    weights: &Weights,
    metadata: &[(&str, String)],
) -> Result<ModelProto, OnnxError> {
    let mut graph = Builder::new(weights);
    let filters: Vec<usize> = config.filters().iter().map(|&f| f as usize).collect();
    let depth = filters.len();
    let mut skips = Vec::with_capacity(depth);
    let mut h = INPUT.to_string();
    let mut cin = in_channels;
    for (level, &f) in filters.iter().enumerate() {
        h = graph.block(config, &format!("enc.{level}"), &h, cin, f)?;
        cin = f;
        if level + 1 < depth {
            skips.push(h.clone());
            h = graph.node(
                "MaxPool",
                &[&h],
                vec![ints("kernel_shape", &[2, 2, 2]), ints("strides", &[2, 2, 2])],
            );
        }
    }
    for (i, level) in (1..depth).rev().enumerate() {
        let (from, to) = (filters[level], filters[level - 1]);
        let skip = skips.pop().unwrap_or_else(|| h.clone());
        let prefix = format!("up.{i}");
        let upsampled = match config.upsample {
            Upsample::Transposed => {
                let w = graph.param(&format!("{prefix}.weight"), &[from, to, 2, 2, 2])?;
                let b = graph.param(&format!("{prefix}.bias"), &[to])?;
                graph.node(
                    "ConvTranspose",
                    &[&h, &w, &b],
                    vec![ints("kernel_shape", &[2, 2, 2]), ints("strides", &[2, 2, 2])],
                )
            }
            Upsample::Trilinear => {
                let head = graph.node("Shape", &[&h], vec![int("end", 2)]);
                let spatial = graph.node("Shape", &[&skip], vec![int("start", 2)]);
                let sizes = graph.node("Concat", &[&head, &spatial], vec![int("axis", 0)]);
                let resized = graph.node(
                    "Resize",
                    &[&h, "", "", &sizes],
                    vec![
                        string("mode", "linear"),
                        string("coordinate_transformation_mode", "half_pixel"),
                    ],
                );
                graph.conv(&resized, &prefix, from, to, 1)?
            }
        };
        let joined = graph.node("Concat", &[&upsampled, &skip], vec![int("axis", 1)]);
        h = graph.block(config, &format!("dec.{i}"), &joined, 2 * to, to)?;
    }
    let heads = config.output.channels();
    let logits = graph.conv(&h, "out", filters[0], heads, 1)?;
    match config.output {
        Output::Labels => graph.named_node("Softmax", &[&logits], vec![int("axis", 1)], OUTPUT),
        Output::Regions => graph.named_node("Sigmoid", &[&logits], Vec::new(), OUTPUT),
    };
    graph.check_all_used(config)?;
    Ok(graph.finish(in_channels, heads, metadata))
}

/// The float32 initializers of an ONNX model file, by name: the network's weights.
pub fn read_initializers(path: &Path) -> Result<Tensors, OnnxError> {
    let file_error = |message: String| OnnxError::File {
        path: path.display().to_string(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| file_error(format!("cannot read: {e}")))?;
    let model = ModelProto::decode(bytes.as_slice()).map_err(|e| file_error(format!("not an ONNX model: {e}")))?;
    let graph = model
        .graph
        .ok_or_else(|| file_error("an ONNX model without a graph".into()))?;
    let mut tensors = BTreeMap::new();
    for tensor in graph.initializer {
        if tensor.data_type != FLOAT {
            continue;
        }
        let shape: Vec<usize> = tensor.dims.iter().map(|&d| d.max(0) as usize).collect();
        let values: Vec<f32> = if tensor.raw_data.is_empty() {
            tensor.float_data
        } else {
            tensor
                .raw_data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        };
        if values.len() != shape.iter().product::<usize>() {
            return Err(file_error(format!(
                "initializer '{}' holds {} values for shape {shape:?}",
                tensor.name,
                values.len()
            )));
        }
        tensors.insert(tensor.name, (shape, values));
    }
    Ok(tensors)
}

fn attribute(name: &str, kind: i32) -> AttributeProto {
    AttributeProto {
        name: name.to_string(),
        r#type: kind,
        ..Default::default()
    }
}

fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        ints: values.to_vec(),
        ..attribute(name, ATTRIBUTE_INTS)
    }
}

fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        i: value,
        ..attribute(name, ATTRIBUTE_INT)
    }
}

fn float(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        f: value,
        ..attribute(name, ATTRIBUTE_FLOAT)
    }
}

fn string(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        s: value.as_bytes().to_vec(),
        ..attribute(name, ATTRIBUTE_STRING)
    }
}

/// A graph under construction: nodes in order, initializers taken from the weights.
struct Builder<'w> {
    weights: &'w Weights,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    used: BTreeSet<String>,
    /// Values made so far, for fresh names.
    values: usize,
}

impl<'w> Builder<'w> {
    fn new(weights: &'w Weights) -> Builder<'w> {
        Builder {
            weights,
            nodes: Vec::new(),
            initializers: Vec::new(),
            used: BTreeSet::new(),
            values: 0,
        }
    }

    /// Adds node `op` on `inputs` and returns its output's name.
    fn node(&mut self, op: &str, inputs: &[&str], attributes: Vec<AttributeProto>) -> String {
        self.values += 1;
        let output = format!("{}_{}", op.to_lowercase(), self.values);
        self.named_node(op, inputs, attributes, &output)
    }

    fn named_node(&mut self, op: &str, inputs: &[&str], attribute: Vec<AttributeProto>, output: &str) -> String {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            name: format!("{op}_{}", self.nodes.len()),
            op_type: op.to_string(),
            attribute,
        });
        output.to_string()
    }

    /// The weight `name`, checked against the shape the network needs, as an initializer.
    fn param(&mut self, name: &str, expected: &[usize]) -> Result<String, OnnxError> {
        let (shape, values) = self.weights.tensors.get(name).ok_or_else(|| OnnxError::Missing {
            source_name: self.weights.source.clone(),
            name: name.to_string(),
            expected: expected.to_vec(),
        })?;
        if shape != expected {
            return Err(OnnxError::Shape {
                source_name: self.weights.source.clone(),
                name: name.to_string(),
                found: shape.clone(),
                expected: expected.to_vec(),
            });
        }
        if self.used.insert(name.to_string()) {
            self.initializers.push(float_tensor(name, shape, values));
        }
        Ok(name.to_string())
    }

    /// A constant of the graph's own (not a weight).
    fn constant(&mut self, tensor: TensorProto) -> String {
        let name = tensor.name.clone();
        self.initializers.push(tensor);
        name
    }

    /// A `kernel`^3 convolution `prefix` (stride 1, same padding) with its bias.
    fn conv(&mut self, x: &str, prefix: &str, cin: usize, cout: usize, kernel: usize) -> Result<String, OnnxError> {
        let w = self.param(&format!("{prefix}.weight"), &[cout, cin, kernel, kernel, kernel])?;
        let b = self.param(&format!("{prefix}.bias"), &[cout])?;
        let pad = ((kernel - 1) / 2) as i64;
        let k = kernel as i64;
        Ok(self.node(
            "Conv",
            &[x, &w, &b],
            vec![ints("kernel_shape", &[k, k, k]), ints("pads", &[pad; 6])],
        ))
    }

    /// The normalisation `prefix` over `channels`, or `x` unchanged without one.
    fn norm(&mut self, config: &ModelConfig, x: &str, prefix: &str, channels: usize) -> Result<String, OnnxError> {
        let epsilon = float("epsilon", NORM_EPSILON);
        match config.norm {
            Norm::None => Ok(x.to_string()),
            Norm::Instance => {
                let w = self.param(&format!("{prefix}.weight"), &[channels])?;
                let b = self.param(&format!("{prefix}.bias"), &[channels])?;
                Ok(self.node("InstanceNormalization", &[x, &w, &b], vec![epsilon]))
            }
            Norm::Batch => {
                let w = self.param(&format!("{prefix}.weight"), &[channels])?;
                let b = self.param(&format!("{prefix}.bias"), &[channels])?;
                let mean = self.param(&format!("{prefix}.running_mean"), &[channels])?;
                let var = self.param(&format!("{prefix}.running_var"), &[channels])?;
                Ok(self.node("BatchNormalization", &[x, &w, &b, &mean, &var], vec![epsilon]))
            }
            Norm::Group => {
                // Instance norm of [batch, groups, rest], back to the input's shape, then the
                // per-channel scale and shift (opset 17 has no GroupNormalization).
                let groups = config.groups as usize;
                let w = self.param(&format!("{prefix}.weight"), &[channels])?;
                let b = self.param(&format!("{prefix}.bias"), &[channels])?;
                let n = self.values;
                let grouped_shape = self.constant(int64_tensor(
                    &format!("{prefix}.group_shape_{n}"),
                    &[0, groups as i64, -1],
                ));
                let per_channel = self.constant(int64_tensor(
                    &format!("{prefix}.channel_shape_{n}"),
                    &[channels as i64, 1, 1, 1],
                ));
                let ones = self.constant(float_tensor(
                    &format!("{prefix}.group_ones_{n}"),
                    &[groups],
                    &vec![1.0; groups],
                ));
                let zeros = self.constant(float_tensor(
                    &format!("{prefix}.group_zeros_{n}"),
                    &[groups],
                    &vec![0.0; groups],
                ));
                let shape = self.node("Shape", &[x], Vec::new());
                let grouped = self.node("Reshape", &[x, &grouped_shape], Vec::new());
                let normed = self.node("InstanceNormalization", &[&grouped, &ones, &zeros], vec![epsilon]);
                let back = self.node("Reshape", &[&normed, &shape], Vec::new());
                let scale = self.node("Reshape", &[&w, &per_channel], Vec::new());
                let shift = self.node("Reshape", &[&b, &per_channel], Vec::new());
                let scaled = self.node("Mul", &[&back, &scale], Vec::new());
                Ok(self.node("Add", &[&scaled, &shift], Vec::new()))
            }
        }
    }

    fn activate(&mut self, config: &ModelConfig, x: &str) -> String {
        match config.activation {
            Activation::Relu => self.node("Relu", &[x], Vec::new()),
            Activation::LeakyRelu => self.node("LeakyRelu", &[x], vec![float("alpha", LEAKY_SLOPE)]),
        }
    }

    /// One level: conv, [norm], activation, conv, [norm], [residual], activation, with the
    /// parameter indices of the trainer's `nn.Sequential` layout.
    fn block(
        &mut self,
        config: &ModelConfig,
        prefix: &str,
        x: &str,
        cin: usize,
        cout: usize,
    ) -> Result<String, OnnxError> {
        let (conv1, norm1, conv2, norm2) = if config.norm == Norm::None {
            (0, 0, 3, 0)
        } else {
            (0, 1, 4, 5)
        };
        let mut h = self.conv(x, &format!("{prefix}.{conv1}"), cin, cout, 3)?;
        h = self.norm(config, &h, &format!("{prefix}.{norm1}"), cout)?;
        h = self.activate(config, &h);
        h = self.conv(&h, &format!("{prefix}.{conv2}"), cout, cout, 3)?;
        h = self.norm(config, &h, &format!("{prefix}.{norm2}"), cout)?;
        if config.residual {
            let skip = if cin == cout {
                x.to_string()
            } else {
                self.conv(x, &format!("{prefix}.skip"), cin, cout, 1)?
            };
            h = self.node("Add", &[&h, &skip], Vec::new());
        }
        Ok(self.activate(config, &h))
    }

    /// Refuses weights with tensors the graph did not take, but for deep supervision heads
    /// (training only).
    fn check_all_used(&self, config: &ModelConfig) -> Result<(), OnnxError> {
        let unused: Vec<&str> = self
            .weights
            .tensors
            .keys()
            .filter(|name| !self.used.contains(*name))
            .filter(|name| !(config.deep_supervision && name.starts_with("deep.")))
            .map(String::as_str)
            .collect();
        if unused.is_empty() {
            return Ok(());
        }
        Err(OnnxError::Unused {
            source_name: self.weights.source.clone(),
            names: unused.join(", "),
        })
    }

    fn finish(self, in_channels: usize, heads: usize, metadata: &[(&str, String)]) -> ModelProto {
        let value = |name: &str, channels: usize| ValueInfoProto {
            name: name.to_string(),
            r#type: Some(TypeProto {
                tensor_type: Some(TensorTypeProto {
                    elem_type: FLOAT,
                    shape: Some(TensorShapeProto {
                        dim: [
                            named("batch"),
                            fixed(channels as i64),
                            named("z"),
                            named("y"),
                            named("x"),
                        ]
                        .into(),
                    }),
                }),
            }),
        };
        ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "segtop".to_string(),
            producer_version: env!("CARGO_PKG_VERSION").to_string(),
            doc_string: "3D U-Net for brain tumour segmentation trained with segtop".to_string(),
            graph: Some(GraphProto {
                node: self.nodes,
                name: "segtop_unet".to_string(),
                initializer: self.initializers,
                input: vec![value(INPUT, in_channels)],
                output: vec![value(OUTPUT, heads)],
            }),
            metadata_props: metadata
                .iter()
                .map(|(key, value)| StringStringEntryProto {
                    key: key.to_string(),
                    value: value.clone(),
                })
                .collect(),
        }
    }
}

fn named(name: &str) -> Dimension {
    Dimension {
        dim_value: None,
        dim_param: Some(name.to_string()),
    }
}

fn fixed(size: i64) -> Dimension {
    Dimension {
        dim_value: Some(size),
        dim_param: None,
    }
}

fn float_tensor(name: &str, shape: &[usize], values: &[f32]) -> TensorProto {
    TensorProto {
        dims: shape.iter().map(|&d| d as i64).collect(),
        data_type: FLOAT,
        name: name.to_string(),
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn int64_tensor(name: &str, values: &[i64]) -> TensorProto {
    TensorProto {
        dims: vec![values.len() as i64],
        data_type: INT64,
        name: name.to_string(),
        int64_data: values.to_vec(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Weights of the right shapes for `config`, each tensor filled with its index.
    fn weights_for(config: &ModelConfig, in_channels: usize) -> Weights {
        // Export once against an empty set to learn the names and shapes it asks for.
        let mut weights = Weights {
            source: "w.safetensors".into(),
            ..Default::default()
        };
        loop {
            match export(config, in_channels, &weights, &[]) {
                Ok(_) => return weights,
                Err(OnnxError::Missing { name, expected, .. }) => {
                    let n = weights.tensors.len() as f32;
                    let len = expected.iter().product();
                    weights.tensors.insert(name, (expected, vec![n; len]));
                }
                Err(other) => panic!("{other}"),
            }
        }
    }

    fn ops(model: &ModelProto) -> Vec<String> {
        model
            .graph
            .as_ref()
            .map_or(Vec::new(), |g| g.node.iter().map(|n| n.op_type.clone()).collect())
    }

    #[test]
    fn the_seed_network_takes_every_weight_and_round_trips_through_the_file() {
        let config = ModelConfig {
            depth: 3,
            base_filters: 4,
            norm: Norm::None,
            activation: Activation::Relu,
            output: Output::Labels,
            ..ModelConfig::default()
        };
        let weights = weights_for(&config, 4);
        // Per level two convolutions, weight and bias each; two transposed convolutions; out.
        assert_eq!(weights.tensors.len(), 3 * 4 + 2 * 4 + 2 * 2 + 2);
        assert!(weights.tensors.contains_key("enc.0.3.weight"));
        let model = export(&config, 4, &weights, &[("segtop.run", "r".into())]).expect("exports");
        let ops = ops(&model);
        assert_eq!(ops.iter().filter(|o| *o == "MaxPool").count(), 2);
        assert_eq!(ops.iter().filter(|o| *o == "ConvTranspose").count(), 2);
        assert_eq!(ops.last().map(String::as_str), Some("Softmax"));
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, model.encode_to_vec()).expect("write");
        let back = read_initializers(&path).expect("reads");
        assert_eq!(back.len(), weights.tensors.len());
        for (name, tensor) in &weights.tensors {
            assert_eq!(back.get(name), Some(tensor), "{name}");
        }
    }

    #[test]
    fn wrong_missing_or_extra_weights_are_named() {
        let config = ModelConfig {
            depth: 2,
            base_filters: 4,
            ..ModelConfig::default()
        };
        let mut weights = weights_for(&config, 4);
        weights
            .tensors
            .insert("enc.0.0.weight".into(), (vec![4, 3, 3, 3, 3], vec![0.0; 324]));
        let error = export(&config, 4, &weights, &[]).expect_err("shape").to_string();
        assert!(
            error.contains(
                "w.safetensors: tensor 'enc.0.0.weight' has shape [4, 3, 3, 3, 3], the network needs [4, 4, 3, 3, 3]"
            ),
            "{error}"
        );
        let mut weights = weights_for(&config, 4);
        weights.tensors.remove("out.bias");
        let error = export(&config, 4, &weights, &[]).expect_err("missing").to_string();
        assert!(error.contains("no tensor 'out.bias'"), "{error}");
        let mut weights = weights_for(&config, 4);
        weights.tensors.insert("extra.weight".into(), (vec![1], vec![0.0]));
        let error = export(&config, 4, &weights, &[]).expect_err("extra").to_string();
        assert!(
            error.contains("tensors the network does not have: extra.weight"),
            "{error}"
        );
        // Deep supervision heads are training only: left out, not refused.
        let deep = ModelConfig {
            deep_supervision: true,
            depth: 3,
            ..config
        };
        let mut weights = weights_for(&deep, 4);
        weights
            .tensors
            .insert("deep.0.weight".into(), (vec![3, 8, 1, 1, 1], vec![0.0; 24]));
        assert!(export(&deep, 4, &weights, &[]).is_ok());
    }

    #[test]
    fn group_norm_and_trilinear_up_sampling_have_their_nodes() {
        let config = ModelConfig {
            depth: 2,
            base_filters: 8,
            norm: Norm::Group,
            groups: 4,
            upsample: Upsample::Trilinear,
            residual: true,
            ..ModelConfig::default()
        };
        let weights = weights_for(&config, 4);
        assert!(weights.tensors.contains_key("enc.0.skip.weight"));
        let model = export(&config, 4, &weights, &[]).expect("exports");
        let ops = ops(&model);
        assert!(ops.contains(&"Resize".to_string()));
        assert_eq!(ops.iter().filter(|o| *o == "InstanceNormalization").count(), 6);
        assert_eq!(ops.last().map(String::as_str), Some("Sigmoid"));
    }
}
