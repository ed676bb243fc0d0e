//! Commands: see main.rs for the dispatch.

use crate::args::Args;
use crate::{Ctx, Failure};

pub fn run(_ctx: &Ctx, command: &str, _args: Args) -> Result<(), Failure> {
    Err(Failure::error(format!("{command}: not implemented yet")))
}
