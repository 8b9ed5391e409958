//! The server: runs the wine MLP on ciphertexts with the client's evaluation key. It never sees a
//! secret key.
#![forbid(unsafe_code)]

use wine_service::{read, wine, write};

fn run(args: &[String]) -> Result<(), String> {
    let [key, input, output] = args else {
        return Err("usage: wine-server EVAL.key QUERY.ct ANSWER.ct".into());
    };
    let err = |e: wine::Error| e.to_string();
    let server = wine::Server::new().map_err(err)?;
    let key = wine::EvalKey::from_bytes(&read(key)?).map_err(err)?;
    let query = wine::Ciphertexts::from_bytes(&read(input)?).map_err(err)?;
    let start = std::time::Instant::now();
    let answer = server.run(&key, &query).map_err(err)?;
    write(output, &answer.to_bytes())?;
    println!(
        "ran {} sample(s) in {:.0} ms ({} PBS each) to {output}",
        query.samples(),
        start.elapsed().as_secs_f64() * 1e3,
        wine::PBS_COUNT
    );
    Ok(())
}

fn main() {
    wine_service::cli_main(run);
}
