fn main() {
    let model = "../../testsuite/models/mlp_wine/model.onnx";
    let calibration = "../../testsuite/models/mlp_wine/inputs.npy";
    fhec::build::Model::new(model).calibration(calibration).name("wine").compile_or_exit();
    // The same model under CKKS: a batch of samples per ciphertext.
    fhec::build::Model::new(model)
        .calibration(calibration)
        .scheme(fhec::scheme::Scheme::Ckks)
        .name("wine_ckks")
        .compile_or_exit();
}
