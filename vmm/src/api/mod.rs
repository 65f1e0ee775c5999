//! The per-VM REST API: Cloud Hypervisor's paths under `/api/v1/` over HTTP/1.1 on a Unix
//! socket. [`server`] speaks HTTP and turns each request into an [`ApiRequest`]; the VMM's
//! main loop ([`crate::control`]) carries it out and answers with an [`ApiResponse`].
//!
//! Status codes (the OpenAPI document `vmm/openapi/pv-vmm.yaml` lists them per path):
//! 200 with a JSON body, or 204 without one, on success; 400 for a body that does not
//! parse, has unknown fields or wrong types, or describes a configuration that cannot run
//! (the message names the field, the value and the rule); 404 for an unknown path, and for
//! a VM request when no VM is created (Cloud Hypervisor's code for that); 405 for a known
//! path with the wrong method; 409 for a request the VM's state does not allow (Cloud
//! Hypervisor's server answers 500 there, its document says 405: 409 says what it is); 408 for a body that does not arrive within
//! [`BODY_TIMEOUT`]; 413 for a body over [`MAX_BODY`]; 500 only for failures
//! of the host (a KVM ioctl that fails); 503 when the VMM is shutting down, or beyond the
//! connection limit ([`server`]). Every error body
//! is a JSON array of strings, the error's chain outermost first, as Cloud Hypervisor's (so
//! that its `ch-remote` prints it), and no client mistake changes the VM.

pub mod server;

use hypervisor_glue::change::PvPatch;

use crate::config::vm_config::VmConfig;

/// The largest request body accepted (a VM config is well under 4 KiB).
pub const MAX_BODY: usize = 64 * 1024;

/// How long a request body may take to arrive once its headers are in (hyper itself closes
/// connections whose headers take longer than 30 s): a client that trickles a body cannot
/// hold a connection slot for longer.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The API's version prefix.
pub const PREFIX: &str = "/api/v1/";

/// What a client asks of the VMM.
#[derive(Debug)]
pub enum ApiRequest {
    /// `GET vmm.ping`.
    VmmPing,
    /// `PUT vmm.shutdown`: stop the VM, if any, and end the process.
    VmmShutdown,
    /// `PUT vm.create`.
    VmCreate(Box<VmConfig>),
    /// `PUT vm.boot`.
    VmBoot,
    /// `GET vm.info`.
    VmInfo,
    /// `GET vm.counters`.
    VmCounters,
    /// `PUT vm.pause`.
    VmPause,
    /// `PUT vm.resume`.
    VmResume,
    /// `PUT vm.reboot`.
    VmReboot,
    /// `PUT vm.shutdown`.
    VmShutdown,
    /// `PUT vm.delete`.
    VmDelete,
    /// `PUT vm.pv`.
    VmPv(PvPatch),
}

/// The HTTP method of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Reads state.
    Get,
    /// Changes state.
    Put,
}

impl Method {
    /// The method's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
        }
    }
}

/// One API path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// The name after [`PREFIX`] (`vm.info`).
    pub name: &'static str,
    /// Its method.
    pub method: Method,
    /// Whether it takes a JSON body.
    pub body: bool,
}

/// Every path the API serves.
pub const ENDPOINTS: &[Endpoint] = &[
    endpoint("vmm.ping", Method::Get, false),
    endpoint("vmm.shutdown", Method::Put, false),
    endpoint("vm.create", Method::Put, true),
    endpoint("vm.boot", Method::Put, false),
    endpoint("vm.info", Method::Get, false),
    endpoint("vm.counters", Method::Get, false),
    endpoint("vm.pause", Method::Put, false),
    endpoint("vm.resume", Method::Put, false),
    endpoint("vm.reboot", Method::Put, false),
    endpoint("vm.shutdown", Method::Put, false),
    endpoint("vm.delete", Method::Put, false),
    endpoint("vm.pv", Method::Put, true),
];

const fn endpoint(name: &'static str, method: Method, body: bool) -> Endpoint {
    Endpoint { name, method, body }
}

/// Finds the endpoint of a request path.
pub fn route(path: &str) -> Result<&'static Endpoint, ApiError> {
    path.strip_prefix(PREFIX)
        .and_then(|name| ENDPOINTS.iter().find(|e| e.name == name))
        .ok_or_else(|| ApiError::NotFound(path.to_owned()))
}

/// Turns a routed request and its body into an [`ApiRequest`].
pub fn parse_request(endpoint: &Endpoint, body: &[u8]) -> Result<ApiRequest, ApiError> {
    let json = |what: &str, e: serde_json::Error| {
        ApiError::BadRequest(format!("{what}: invalid JSON body: {e}"))
    };
    Ok(match endpoint.name {
        "vmm.ping" => ApiRequest::VmmPing,
        "vmm.shutdown" => ApiRequest::VmmShutdown,
        "vm.create" => ApiRequest::VmCreate(Box::new(
            serde_json::from_slice(body).map_err(|e| json("vm.create", e))?,
        )),
        "vm.boot" => ApiRequest::VmBoot,
        "vm.info" => ApiRequest::VmInfo,
        "vm.counters" => ApiRequest::VmCounters,
        "vm.pause" => ApiRequest::VmPause,
        "vm.resume" => ApiRequest::VmResume,
        "vm.reboot" => ApiRequest::VmReboot,
        "vm.shutdown" => ApiRequest::VmShutdown,
        "vm.delete" => ApiRequest::VmDelete,
        "vm.pv" => ApiRequest::VmPv(serde_json::from_slice(body).map_err(|e| json("vm.pv", e))?),
        other => return Err(ApiError::NotFound(format!("{PREFIX}{other}"))),
    })
}

/// An API failure; [`ApiError::status`] gives its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The request cannot be carried out as given (400).
    #[error("{0}")]
    BadRequest(String),
    /// No such path (404).
    #[error("unknown path {0}; the API serves /api/v1/ with vmm.ping, vmm.shutdown, vm.create, vm.boot, vm.info, vm.counters, vm.pause, vm.resume, vm.reboot, vm.shutdown, vm.delete, vm.pv")]
    NotFound(String),
    /// The path exists with another method (405).
    #[error("{path} takes {allowed}, not {method}")]
    MethodNotAllowed {
        /// The path.
        path: String,
        /// The method used.
        method: String,
        /// The method it takes.
        allowed: &'static str,
    },
    /// The VM's state does not allow the request (409).
    #[error("{0}")]
    Conflict(String),
    /// No VM is created (404, as Cloud Hypervisor answers it).
    #[error("{0}")]
    NotCreated(String),
    /// The body is over [`MAX_BODY`] (413).
    #[error("request body over the limit of {MAX_BODY} bytes")]
    PayloadTooLarge,
    /// The body did not arrive within [`BODY_TIMEOUT`] (408).
    #[error("the request body did not arrive within {} s", BODY_TIMEOUT.as_secs())]
    BodyTimeout,
    /// The host failed (500).
    #[error("{0}")]
    Internal(String),
    /// The VMM is shutting down (503).
    #[error("the VMM is shutting down")]
    Unavailable,
}

impl ApiError {
    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::NotFound(_) => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::Conflict(_) => 409,
            ApiError::NotCreated(_) => 404,
            ApiError::PayloadTooLarge => 413,
            ApiError::BodyTimeout => 408,
            ApiError::Internal(_) => 500,
            ApiError::Unavailable => 503,
        }
    }

    /// The JSON error body: the messages of the error's chain, outermost first (Cloud
    /// Hypervisor's shape; `ch-remote` prints each).
    pub fn body(&self) -> String {
        let mut chain = vec![self.to_string()];
        let mut source = std::error::Error::source(self);
        while let Some(e) = source {
            chain.push(e.to_string());
            source = e.source();
        }
        serde_json::Value::from(chain).to_string()
    }
}

/// What the VMM answers: a JSON body (200), nothing (204), or an error.
pub type ApiResponse = Result<Option<serde_json::Value>, ApiError>;

/// A request on its way to the main loop, with the channel for the answer.
#[derive(Debug)]
pub struct ApiMessage {
    /// The request.
    pub request: ApiRequest,
    /// Where the answer goes.
    pub reply: tokio::sync::oneshot::Sender<ApiResponse>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_every_endpoint_and_nothing_else() {
        for e in ENDPOINTS {
            let path = format!("{PREFIX}{}", e.name);
            assert_eq!(route(&path).map(|r| r.name), Ok(e.name));
        }
        for bad in [
            "/api/v1/",
            "/api/v1/vm.infoo",
            "/api/v2/vm.info",
            "/vm.info",
            "",
            "/api/v1/vm.info/x",
        ] {
            let err = route(bad).expect_err(bad);
            assert_eq!(err.status(), 404, "{bad}");
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn bodies_parse_or_name_the_problem() {
        let pv = route("/api/v1/vm.pv").expect("route");
        assert!(matches!(
            parse_request(pv, br#"{"halt_poll_ns":0}"#),
            Ok(ApiRequest::VmPv(PvPatch {
                halt_poll_ns: Some(Some(0)),
                ..
            }))
        ));
        for (body, needle) in [
            (&b"{"[..], "EOF"),
            (br#"{"halt_pol_ns":0}"#, "unknown field `halt_pol_ns`"),
            (br#"{"halt_poll_ns":"fast"}"#, "invalid type"),
            (br#"{"halt_poll_ns":-1}"#, "invalid value"),
            (br#"{"dedicated":"yes"}"#, "invalid type"),
            (br#"{"features":["warp_drive"]}"#, "warp_drive"),
            (b"", "EOF"),
        ] {
            let err = parse_request(pv, body).expect_err("bad body");
            assert_eq!(err.status(), 400);
            assert!(
                err.to_string().starts_with("vm.pv: invalid JSON body"),
                "{err}"
            );
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
        let create = route("/api/v1/vm.create").expect("route");
        let err = parse_request(create, b"[]").expect_err("array");
        assert!(
            err.to_string().starts_with("vm.create: invalid JSON body"),
            "{err}"
        );
        // Bodies of endpoints that take none are ignored.
        let boot = route("/api/v1/vm.boot").expect("route");
        assert!(matches!(
            parse_request(boot, b"junk"),
            Ok(ApiRequest::VmBoot)
        ));
    }

    #[test]
    fn errors_have_statuses_and_json_bodies() {
        let cases = [
            (ApiError::BadRequest("x".into()), 400),
            (ApiError::NotFound("/p".into()), 404),
            (
                ApiError::MethodNotAllowed {
                    path: "/p".into(),
                    method: "POST".into(),
                    allowed: "GET",
                },
                405,
            ),
            (ApiError::Conflict("c".into()), 409),
            (ApiError::NotCreated("n".into()), 404),
            (ApiError::PayloadTooLarge, 413),
            (ApiError::BodyTimeout, 408),
            (ApiError::Internal("i".into()), 500),
            (ApiError::Unavailable, 503),
        ];
        for (err, status) in cases {
            assert_eq!(err.status(), status);
            let body: serde_json::Value = serde_json::from_str(&err.body()).expect("json");
            assert_eq!(body, serde_json::json!([err.to_string()]));
        }
    }
}
