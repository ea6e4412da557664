//! Client TLS towards the upstream apiserver: verify its serving cert against the cluster CA
//! under a fixed server name (default `kubernetes.default.svc`, which is in every apiserver's
//! SANs, so 127.0.0.1 need not be), with or without mvp's front-proxy client cert.
use std::path::Path;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::ServerName;

use super::reload::ReloadingKeyPair;
use super::{TlsError, load_roots};

/// ALPN for pooled request connections: the pool speaks h2 when the upstream offers it.
const ALPN_POOLED: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN for upgrade connections: HTTP/1.1 Upgrade only exists on HTTP/1.1.
const ALPN_UPGRADE: &[&[u8]] = &[b"http/1.1"];

/// The client configs mvp uses upstream, built once.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// No client certificate: bearer-token and anonymous callers.
    pub plain: Arc<ClientConfig>,
    /// No client certificate, HTTP/1.1 only (upgrades).
    pub plain_upgrade: Arc<ClientConfig>,
    /// mvp's front-proxy client cert: x509 and front-proxy callers; None if not configured.
    pub front_proxy: Option<Arc<ClientConfig>>,
    /// As `front_proxy`, HTTP/1.1 only (upgrades).
    pub front_proxy_upgrade: Option<Arc<ClientConfig>>,
    /// The name the upstream's cert is verified for (and sent as SNI).
    pub server_name: ServerName<'static>,
    /// mvp's front-proxy client pair, reloaded from disk (poll it with `tls::spawn_reloader`).
    pub proxy_client: Option<Arc<ReloadingKeyPair>>,
}

impl UpstreamTls {
    /// Build from the cluster CA, the server name and the optional front-proxy client pair.
    pub fn new(
        ca_file: &Path,
        server_name: &str,
        proxy_client: Option<(&Path, &Path)>,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let roots = Arc::new(load_roots(ca_file)?);
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| TlsError::ServerName(server_name.to_owned()))?;
        let builder = || {
            ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map(|b| b.with_root_certificates(roots.clone()))
                .map_err(|source| TlsError::Rustls {
                    what: "upstream TLS config".into(),
                    source,
                })
        };
        let with_alpn = |mut config: ClientConfig, alpn: &[&[u8]]| {
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Arc::new(config)
        };
        let plain = builder()?.with_no_client_auth();
        let proxy_client = proxy_client
            .map(|(cert, key)| {
                ReloadingKeyPair::load(
                    "--proxy-client-cert-file/--proxy-client-key-file",
                    cert,
                    key,
                    provider.clone(),
                )
                .map(Arc::new)
            })
            .transpose()?;
        let front_proxy = match &proxy_client {
            None => None,
            Some(pair) => {
                let mut config = builder()?.with_client_cert_resolver(pair.clone());
                // A resumed session keeps the identity of the cert it was made with: after a
                // renewal the apiserver would keep seeing the old (eventually expired) cert.
                // Identity-bearing connections always do a full handshake.
                config.resumption = rustls::client::Resumption::disabled();
                Some(config)
            }
        };
        Ok(UpstreamTls {
            plain: with_alpn(plain.clone(), ALPN_POOLED),
            plain_upgrade: with_alpn(plain, ALPN_UPGRADE),
            front_proxy_upgrade: front_proxy
                .clone()
                .map(|config| with_alpn(config, ALPN_UPGRADE)),
            front_proxy: front_proxy.map(|config| with_alpn(config, ALPN_POOLED)),
            server_name,
            proxy_client,
        })
    }
}
