//! The binary runs on its own (for `make fake-provider` and demos).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[tokio::test]
async fn the_binary_serves_the_model_list_on_the_address_it_prints() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fake-provider"))
        .arg("127.0.0.1:0")
        .stdout(Stdio::piped())
        .spawn()
        .expect("fake-provider starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("the base URL is printed")
        .to_owned();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let models: serde_json::Value = reqwest::get(format!("{base}/models"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(models["data"].as_array().unwrap().len(), 3);
}
