fn main() {
    fhec::build::Model::new("../../testsuite/models/mlp_wine/model.onnx")
        .calibration("../../testsuite/models/mlp_wine/inputs.npy")
        .name("wine")
        .compile_or_exit();
}
