//! The data owner: generates keys, encrypts a wine sample, decrypts the server's answer.
#![forbid(unsafe_code)]

use wine_service::{read, wine, write, write_secret};

const USAGE: &str = "usage: wine-client keygen KEYDIR | encrypt KEYDIR v1,..,v13 OUT.ct | decrypt KEYDIR ANSWER.ct";

fn run(args: &[String]) -> Result<(), String> {
    let err = |e: wine::Error| e.to_string();
    match args {
        [cmd, dir] if cmd == "keygen" => {
            std::fs::create_dir_all(dir).map_err(|e| format!("{dir}: {e}"))?;
            let (client, key) = wine::Client::new().map_err(err)?;
            write_secret(&format!("{dir}/secret.key"), &client.secret_bytes())?;
            write(&format!("{dir}/eval.key"), key.to_bytes())?;
            println!("wrote {dir}/secret.key (keep it) and {dir}/eval.key (for the server)");
        }
        [cmd, dir, values, out] if cmd == "encrypt" => {
            let client = wine::Client::load(&read(&format!("{dir}/secret.key"))?, &read(&format!("{dir}/eval.key"))?)
                .map_err(err)?;
            let parsed: Vec<f32> = values
                .split(',')
                .map(|v| v.trim().parse::<f32>().map_err(|e| format!("{v:?}: {e}")))
                .collect::<Result<_, _>>()?;
            let x: wine::Input = parsed
                .try_into()
                .map_err(|v: Vec<f32>| format!("{} values, the model takes {}", v.len(), wine::INPUT_LEN))?;
            write(out, &client.encrypt(&x).map_err(err)?.to_bytes())?;
            println!("encrypted 1 sample to {out}");
        }
        [cmd, dir, answer] if cmd == "decrypt" => {
            let client = wine::Client::load(&read(&format!("{dir}/secret.key"))?, &read(&format!("{dir}/eval.key"))?)
                .map_err(err)?;
            let results = wine::Results::from_bytes(&read(answer)?).map_err(err)?;
            for p in client.decrypt(&results).map_err(err)? {
                println!("{p:?}");
            }
        }
        _ => return Err(USAGE.into()),
    }
    Ok(())
}

fn main() {
    wine_service::cli_main(run);
}
