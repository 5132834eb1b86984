//! The proxy end to end against in-process backends on loopback: routing by
//! host, balancing, retries past dead backends and dead connections, route
//! swaps under traffic, and TCP routes. One test binary, one module per theme.

mod balancing;
mod failover;
mod http_routing;
mod rollout;
mod support;
mod tcp;
