//! The API's routes, one constant each, so the router and the client name
//! them identically.

/// `GET`: daemon identity and liveness.
pub const PING: &str = "/v1/ping";
/// `GET`: the VMs in the store.
pub const VMS: &str = "/v1/vms";
/// `POST`: stop the daemon cleanly.
pub const SHUTDOWN: &str = "/v1/shutdown";
/// `GET`: the OpenAPI 3 document describing these routes.
pub const OPENAPI: &str = "/v1/openapi.json";
