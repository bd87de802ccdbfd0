// The answers of a TensorFlow.js graph model for rows read from files, with the pure-JS CPU
// backend of @tensorflow/tfjs (no native binding, no network).
//
//   node tfjs_predict.js MODEL_DIR INPUTS_JSON OUTPUT_DIR
//
// MODEL_DIR holds model.json and its weight shards, read from disk by an IOHandler of its own
// (tf.loadGraphModel's file:// handler belongs to tfjs-node). INPUTS_JSON describes each input of
// the model's signature by its key: {"rows": n, "batch": b, "inputs": {key: {"dtype": "float32",
// "shape": [...], "file": "key.bin"} | {"dtype": "string", "shape": [...], "values": [...]}}},
// binary files (little-endian, row-major) lying beside it. The answers of the signature's
// output OUTPUT_KEY (env, default output_0) go to OUTPUT_DIR/answers.bin as float32 with their
// shape in OUTPUT_DIR/answers.json.
'use strict';

const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');

function arrayBufferOf(buffer) {
  return buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength);
}

function fileHandler(dir) {
  return {
    load: async () => {
      const json = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
      const weightSpecs = [];
      const shards = [];
      for (const group of json.weightsManifest || []) {
        weightSpecs.push(...group.weights);
        for (const shard of group.paths) shards.push(fs.readFileSync(path.join(dir, shard)));
      }
      return {
        modelTopology: json.modelTopology,
        weightSpecs,
        weightData: arrayBufferOf(Buffer.concat(shards)),
        format: json.format,
        generatedBy: json.generatedBy,
        convertedBy: json.convertedBy,
        signature: json.signature,
        userDefinedMetadata: json.userDefinedMetadata,
        modelInitializer: json.modelInitializer,
        initializerSignature: json.initializerSignature,
      };
    },
  };
}

function readInputs(file) {
  const spec = JSON.parse(fs.readFileSync(file, 'utf8'));
  const inputs = {};
  for (const [key, input] of Object.entries(spec.inputs)) {
    let values = input.values;
    if (input.file) {
      const bytes = arrayBufferOf(fs.readFileSync(path.join(path.dirname(file), input.file)));
      values = input.dtype === 'int32' ? new Int32Array(bytes) : new Float32Array(bytes);
    }
    inputs[key] = { dtype: input.dtype, shape: input.shape, values };
  }
  return { rows: spec.rows, batch: spec.batch || 256, inputs };
}

function sliceRows(input, start, end) {
  const width = input.shape.slice(1).reduce((a, b) => a * b, 1);
  const values = input.values.slice(start * width, end * width);
  return tf.tensor(values, [end - start, ...input.shape.slice(1)], input.dtype);
}

async function main() {
  const [modelDir, inputsFile, outDir] = process.argv.slice(2);
  const outputKey = process.env.OUTPUT_KEY || 'output_0';
  await tf.setBackend('cpu');
  const model = await tf.loadGraphModel(fileHandler(modelDir));
  const { rows, batch, inputs } = readInputs(inputsFile);
  const parts = [];
  let shape = null;
  for (let start = 0; start < rows; start += batch) {
    const end = Math.min(rows, start + batch);
    const feed = {};
    for (const [key, input] of Object.entries(inputs)) feed[key] = sliceRows(input, start, end);
    const answer = await model.executeAsync(feed, [outputKey]);
    const tensor = Array.isArray(answer) ? answer[0] : answer;
    shape = [rows, ...tensor.shape.slice(1)];
    parts.push(Float32Array.from(await tensor.data()));
    tf.dispose([tensor, ...Object.values(feed)]);
  }
  const total = parts.reduce((n, p) => n + p.length, 0);
  const out = new Float32Array(total);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  fs.writeFileSync(path.join(outDir, 'answers.bin'), Buffer.from(out.buffer));
  fs.writeFileSync(path.join(outDir, 'answers.json'), JSON.stringify({ shape }));
}

main().catch((error) => {
  process.stderr.write(`${error && error.message ? error.message : error}\n`);
  process.exit(1);
});
