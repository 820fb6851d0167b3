//! The processes a phase measures besides its own: the gateway it starts ([`gateway`]), the
//! Redis of the memory phase ([`redis_server`]), and the CPU and memory of the gateway, Redis
//! and the broker, read from `/proc` around a measured window ([`procfs`]) or every second of a
//! timeline ([`sampler`]).

pub(crate) mod gateway;
pub(crate) mod procfs;
pub(crate) mod redis_server;
pub(crate) mod sampler;
