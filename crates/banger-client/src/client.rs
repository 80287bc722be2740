//! Typed HTTP/1.1 calls to the daemon over its unix socket, one connection
//! per call.

use std::path::{Path, PathBuf};

use banger_api::names::ArtifactName;
use banger_api::{
    CachePruneReport, CachePruneRequest, CatalogEntry, ConsoleChunk, CreateVmRequest, DoctorReport,
    ErrorBody, Image, ImagePullRequest, ImportRequest, Kernel, Operation, Ping,
    PrepareWorkspaceQuery, PullRequest, SetVmRequest, ShutdownAccepted, ShutdownRequest, SshTarget,
    Vm, VmSummary, routes,
};
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use routes::with_param;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

/// Errors calling the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket (no file, or a refused connection).
    #[error("bangerd is not running (no answer on {})", socket.display())]
    NotRunning {
        /// The socket tried.
        socket: PathBuf,
        /// What connect said.
        #[source]
        source: std::io::Error,
    },
    /// Connecting failed for another reason (permissions, say).
    #[error("connect to {}", socket.display())]
    Connect {
        /// The socket tried.
        socket: PathBuf,
        /// What connect said.
        #[source]
        source: std::io::Error,
    },
    /// The daemon answered with an error.
    #[error("{}", body.message)]
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// The error body, with code and op id.
        body: ErrorBody,
    },
    /// The exchange failed at the HTTP level.
    #[error("talk to bangerd")]
    Http(#[source] hyper::Error),
    /// The daemon's answer was not what the API promises.
    #[error("unexpected answer from bangerd ({status}): {detail}")]
    Protocol {
        /// The HTTP status.
        status: StatusCode,
        /// What was wrong.
        detail: String,
    },
}

impl ClientError {
    /// The op id of the failed request, when the daemon gave one.
    pub fn op_id(&self) -> Option<&str> {
        match self {
            Self::Api { body, .. } => Some(&body.op_id),
            _ => None,
        }
    }

    /// Whether the daemon said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Api { body, .. } if body.code == banger_api::ErrorCode::NotFound)
    }

    /// Whether the failure means no daemon is listening.
    pub fn is_not_running(&self) -> bool {
        matches!(self, Self::NotRunning { .. })
    }
}

/// A fresh op id for a request whose operation the caller wants to
/// recognise as its own.
pub fn mint_op_id() -> String {
    format!("cli-{:016x}", rand::random::<u64>())
}

fn error_from(status: StatusCode, bytes: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) => ClientError::Api { status, body },
        Err(_) => ClientError::Protocol {
            status,
            detail: String::from_utf8_lossy(bytes).into_owned(),
        },
    }
}

/// A client of the daemon at one socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// A client for the daemon listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET /v1/ping`.
    pub async fn ping(&self) -> Result<Ping, ClientError> {
        self.call(Method::GET, routes::PING, None::<&()>).await
    }

    /// `GET /v1/vms`.
    pub async fn list_vms(&self) -> Result<Vec<VmSummary>, ClientError> {
        self.call(Method::GET, routes::VMS, None::<&()>).await
    }

    /// `POST /v1/vms` under the op id `op_id`: the create operation.
    pub async fn create_vm(
        &self,
        op_id: &str,
        req: &CreateVmRequest,
    ) -> Result<Operation, ClientError> {
        self.call_as(op_id, Method::POST, routes::VMS, Some(req))
            .await
    }

    /// `GET /v1/vms/{vm}`.
    pub async fn get_vm(&self, vm: &str) -> Result<Vm, ClientError> {
        self.call(Method::GET, &with_param(routes::VM, vm), None::<&()>)
            .await
    }

    /// `POST /v1/vms/{vm}/start|stop|kill|restart`, as named by `route`.
    pub async fn vm_action(&self, route: &str, vm: &str) -> Result<Vm, ClientError> {
        self.call(Method::POST, &with_param(route, vm), None::<&()>)
            .await
    }

    /// `PATCH /v1/vms/{vm}`.
    pub async fn set_vm(&self, vm: &str, req: &SetVmRequest) -> Result<Vm, ClientError> {
        self.call(Method::PATCH, &with_param(routes::VM, vm), Some(req))
            .await
    }

    /// `DELETE /v1/vms/{vm}`.
    pub async fn delete_vm(&self, vm: &str, force: bool) -> Result<(), ClientError> {
        let mut path = with_param(routes::VM, vm);
        if force {
            path.push_str("?force=true");
        }
        self.call_empty(Method::DELETE, &path).await
    }

    /// `GET /v1/vms/{vm}/ssh`.
    pub async fn vm_ssh_target(&self, vm: &str) -> Result<SshTarget, ClientError> {
        self.call(Method::GET, &with_param(routes::VM_SSH, vm), None::<&()>)
            .await
    }

    /// `GET /v1/vms/{vm}/console?offset=N`.
    pub async fn vm_console(&self, vm: &str, offset: u64) -> Result<ConsoleChunk, ClientError> {
        let path = format!("{}?offset={offset}", with_param(routes::VM_CONSOLE, vm));
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// `GET /v1/doctor`.
    pub async fn doctor(&self) -> Result<DoctorReport, ClientError> {
        self.call(Method::GET, routes::DOCTOR, None::<&()>).await
    }

    /// `POST /v1/shutdown`.
    pub async fn shutdown(&self) -> Result<ShutdownAccepted, ClientError> {
        self.call(Method::POST, routes::SHUTDOWN, Some(&ShutdownRequest {}))
            .await
    }

    /// `GET /v1/openapi.json`, as raw JSON.
    pub async fn openapi(&self) -> Result<serde_json::Value, ClientError> {
        self.call(Method::GET, routes::OPENAPI, None::<&()>).await
    }

    /// `GET /v1/kernels/catalog`.
    pub async fn kernel_catalog(&self) -> Result<Vec<CatalogEntry>, ClientError> {
        self.call(Method::GET, routes::KERNEL_CATALOG, None::<&()>)
            .await
    }

    /// `GET /v1/kernels`.
    pub async fn list_kernels(&self) -> Result<Vec<Kernel>, ClientError> {
        self.call(Method::GET, routes::KERNELS, None::<&()>).await
    }

    /// `GET /v1/kernels/{name}`.
    pub async fn get_kernel(&self, name: &str) -> Result<Kernel, ClientError> {
        self.call(Method::GET, &with_param(routes::KERNEL, name), None::<&()>)
            .await
    }

    /// `POST /v1/kernels/pull` under the op id `op_id` (see [`mint_op_id`]):
    /// the returned operation has that id when this call started it, and a
    /// peer's id when it joined a pull already running.
    pub async fn pull_kernel(
        &self,
        op_id: &str,
        name: &ArtifactName,
    ) -> Result<Operation, ClientError> {
        let req = PullRequest { name: name.clone() };
        self.call_as(op_id, Method::POST, routes::KERNEL_PULL, Some(&req))
            .await
    }

    /// `DELETE /v1/kernels/{name}`.
    pub async fn delete_kernel(&self, name: &str) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, &with_param(routes::KERNEL, name))
            .await
    }

    /// `GET /v1/images/catalog`.
    pub async fn image_catalog(&self) -> Result<Vec<CatalogEntry>, ClientError> {
        self.call(Method::GET, routes::IMAGE_CATALOG, None::<&()>)
            .await
    }

    /// `GET /v1/images`.
    pub async fn list_images(&self) -> Result<Vec<Image>, ClientError> {
        self.call(Method::GET, routes::IMAGES, None::<&()>).await
    }

    /// `GET /v1/images/{name}`.
    pub async fn get_image(&self, name: &str) -> Result<Image, ClientError> {
        self.call(Method::GET, &with_param(routes::IMAGE, name), None::<&()>)
            .await
    }

    /// `POST /v1/images/pull` of catalog image `name`; `op_id` as for
    /// [`Client::pull_kernel`].
    pub async fn pull_image(&self, op_id: &str, name: &str) -> Result<Operation, ClientError> {
        let req = ImagePullRequest {
            name: name.to_owned(),
            image_name: None,
            kernel: None,
            insecure: false,
        };
        self.pull_image_with(op_id, &req).await
    }

    /// `POST /v1/images/pull` with every option (a registry reference).
    pub async fn pull_image_with(
        &self,
        op_id: &str,
        req: &ImagePullRequest,
    ) -> Result<Operation, ClientError> {
        self.call_as(op_id, Method::POST, routes::IMAGE_PULL, Some(req))
            .await
    }

    /// `POST /v1/images/cache/prune`.
    pub async fn prune_image_cache(&self, dry_run: bool) -> Result<CachePruneReport, ClientError> {
        self.call(
            Method::POST,
            routes::IMAGE_CACHE_PRUNE,
            Some(&CachePruneRequest { dry_run }),
        )
        .await
    }

    /// `POST /v1/images/import` under the op id `op_id`.
    pub async fn import_image(
        &self,
        op_id: &str,
        req: &ImportRequest,
    ) -> Result<Operation, ClientError> {
        self.call_as(op_id, Method::POST, routes::IMAGE_IMPORT, Some(req))
            .await
    }

    /// `DELETE /v1/images/{name}`.
    pub async fn delete_image(&self, name: &str) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, &with_param(routes::IMAGE, name))
            .await
    }

    /// `GET /v1/operations/{id}`.
    pub async fn get_operation(&self, id: &str) -> Result<Operation, ClientError> {
        self.call(Method::GET, &with_param(routes::OPERATION, id), None::<&()>)
            .await
    }

    /// `GET /v1/operations/{id}?wait_ms=`: the operation once it changes
    /// stage or ends, or after `wait` (capped at the daemon's maximum).
    pub async fn wait_operation(
        &self,
        id: &str,
        wait: std::time::Duration,
    ) -> Result<Operation, ClientError> {
        let ms = u64::try_from(wait.as_millis())
            .unwrap_or(u64::MAX)
            .min(banger_api::MAX_WAIT_MS);
        let path = format!("{}?wait_ms={ms}", with_param(routes::OPERATION, id));
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// `DELETE /v1/operations/{id}`.
    pub async fn cancel_operation(&self, id: &str) -> Result<Operation, ClientError> {
        self.call(
            Method::DELETE,
            &with_param(routes::OPERATION, id),
            None::<&()>,
        )
        .await
    }

    async fn call_empty(&self, method: Method, path: &str) -> Result<(), ClientError> {
        let (status, bytes) = self.raw(None, method, path, None::<&()>).await?;
        if status.is_success() {
            return Ok(());
        }
        Err(error_from(status, &bytes))
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        self.call_inner(None, method, path, body).await
    }

    async fn call_as<B: Serialize, T: DeserializeOwned>(
        &self,
        op_id: &str,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        self.call_inner(Some(op_id), method, path, body).await
    }

    async fn call_inner<B: Serialize, T: DeserializeOwned>(
        &self,
        op_id: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let (status, bytes) = self.raw(op_id, method, path, body).await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
                status,
                detail: e.to_string(),
            });
        }
        Err(error_from(status, &bytes))
    }

    async fn raw<B: Serialize>(
        &self,
        op_id: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let body = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b).map_err(|e| ClientError::Protocol {
                status: StatusCode::OK,
                detail: format!("encode request: {e}"),
            })?),
            None => Bytes::new(),
        };
        let mut request = Request::builder().method(method).uri(path);
        if !body.is_empty() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(op_id) = op_id {
            request = request.header(banger_api::OP_ID_HEADER, op_id);
        }
        self.exchange(request, Full::new(body)).await
    }

    /// Sends `request` with `body` on a connection of its own; the status
    /// and the whole answer.
    async fn exchange<B>(
        &self,
        request: http::request::Builder,
        body: B,
    ) -> Result<(StatusCode, Bytes), ClientError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stream = UnixStream::connect(&self.socket).await.map_err(|source| {
            use std::io::ErrorKind::{ConnectionRefused, NotFound};
            if matches!(source.kind(), NotFound | ConnectionRefused) {
                ClientError::NotRunning {
                    socket: self.socket.clone(),
                    source,
                }
            } else {
                ClientError::Connect {
                    socket: self.socket.clone(),
                    source,
                }
            }
        })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(ClientError::Http)?;
        let conn = tokio::spawn(conn);
        let request = request
            .header(header::HOST, "bangerd")
            .body(body)
            .map_err(|e| ClientError::Protocol {
                status: StatusCode::OK,
                detail: format!("build request: {e}"),
            })?;
        let response = sender
            .send_request(request)
            .await
            .map_err(ClientError::Http)?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(ClientError::Http)?
            .to_bytes();
        drop(sender);
        let _ = conn.await;
        Ok((status, bytes))
    }

    /// `PUT /v1/vms/{vm}/workspace`: streams the tar `chunks` carries (an
    /// error among them aborts the request, so the daemon never takes a
    /// cut-off stream for a whole one).
    pub async fn prepare_workspace(
        &self,
        vm: &str,
        query: &PrepareWorkspaceQuery,
        chunks: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    ) -> Result<Vm, ClientError> {
        let query = serde_urlencoded::to_string(query).map_err(|e| ClientError::Protocol {
            status: StatusCode::OK,
            detail: format!("encode query: {e}"),
        })?;
        let path = format!("{}?{query}", with_param(routes::VM_WORKSPACE, vm));
        let request = Request::builder()
            .method(Method::PUT)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/x-tar");
        let body = http_body_util::StreamBody::new(Chunks(chunks));
        let (status, bytes) = self.exchange(request, body).await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
                status,
                detail: e.to_string(),
            });
        }
        Err(error_from(status, &bytes))
    }

    /// `GET /v1/vms/{vm}/workspace/objects`.
    pub async fn held_objects(
        &self,
        vm: &str,
    ) -> Result<banger_api::workspace::HeldObjects, ClientError> {
        let path = with_param(routes::VM_WORKSPACE_OBJECTS, vm);
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// `GET /v1/vms/{vm}/workspace/export`: the patch.
    pub async fn export_workspace(&self, vm: &str) -> Result<Bytes, ClientError> {
        let path = with_param(routes::VM_WORKSPACE_EXPORT, vm);
        let (status, bytes) = self.raw(None, Method::GET, &path, None::<&()>).await?;
        if status.is_success() {
            return Ok(bytes);
        }
        Err(error_from(status, &bytes))
    }
}

/// A request body's frames from a channel.
struct Chunks(tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>);

impl futures_core::Stream for Chunks {
    type Item = std::io::Result<hyper::body::Frame<Bytes>>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| c.map(hyper::body::Frame::data)))
    }
}
