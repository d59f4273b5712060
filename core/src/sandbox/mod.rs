//! The sandbox as a user sees it: its one description ([`spec`]), the builder, the parent side of
//! a spawn, the running [`child::Child`], and how it ended ([`verdict`]).

pub(crate) mod builder;
pub(crate) mod child;
pub(crate) mod detach;
pub(crate) mod live;
pub(crate) mod spawn;
pub(crate) mod spec;
pub(crate) mod units;
pub(crate) mod validate;
pub(crate) mod verdict;
