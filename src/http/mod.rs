//! HTTP/1.1 for a worker, without Python: our own connection loop on tokio, with the request
//! line parsed by us and header fields by `httparse`.
//!
//! | module | concern |
//! |---|---|
//! | [`parse`] | the request head, strictly (RFC 9112) |
//! | [`body`] | request body decoding: `Content-Length`, chunked, trailers |
//! | [`limits`] | sizes, timeouts, the body deadline, the worker's body budget |
//! | [`conn`] | one connection: keep-alive, pipelining, timeouts, drain, `100-continue` |
//! | [`proxy_protocol`] | the PROXY protocol header (v1, v2) before the first request |
//! | [`response`] | response heads from the app, framing |
//! | [`errors`] | responses the server makes itself |
//! | [`health`] | `--health-path`, answered without the app |
//! | [`stream`] | the bounded channel a streamed response flows through |
//! | [`send_timeout`] | `--send-timeout`: a client that stops reading is cut |
//! | [`dispatch`] | the seam an application interface (WSGI, later ASGI) implements |
//! | [`date`] | the `Date` header |

pub mod body;
pub mod conn;
pub mod date;
pub mod dispatch;
pub mod errors;
pub mod health;
pub mod limits;
pub mod parse;
pub mod proxy_protocol;
pub mod response;
pub mod send_timeout;
pub mod stream;

pub use conn::{Shared, serve};
pub use dispatch::{Dispatch, Outcome, Reply, ReplyBody, Request};
pub use limits::Limits;

impl crate::logging::access::Headers for parse::Head {
    fn each(&self, name: &str, f: &mut dyn FnMut(&[u8])) {
        for v in self.values(name) {
            f(v);
        }
    }
}

impl crate::logging::access::Headers for response::ResponseHead {
    fn each(&self, name: &str, f: &mut dyn FnMut(&[u8])) {
        for v in self.values(name) {
            f(v);
        }
    }
}
