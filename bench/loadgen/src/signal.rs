//! Signaling load (WebSocket): placeholder, filled in below.

#[derive(clap::Args, Debug)]
pub struct SignalArgs {}

pub fn signal(_a: SignalArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
