//! Front-door flags. Names mirror kube-apiserver's so zero-config detection can fill them from
//! the apiserver's own command line later; mvp's own flags are `--upstream*` and
//! `--tls-reload-interval`.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;

use crate::identity::RequestHeaderNames;

/// Flags of the front door (flatten into a clap command).
#[derive(Debug, Clone, clap::Args)]
pub struct FrontDoorArgs {
    /// The apiserver's serving certificate (mvp presents it); enables the L7 front door.
    /// Without --steer, every front-door flag not given is detected from kube-apiserver.
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    /// The apiserver's serving key.
    #[arg(long)]
    pub tls_private_key_file: Option<PathBuf>,
    /// CA of x509 client certificates (the apiserver's --client-ca-file).
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,
    /// CA of front-proxy client certificates (the apiserver's --requestheader-client-ca-file).
    #[arg(long)]
    pub requestheader_client_ca_file: Option<PathBuf>,
    /// CNs allowed to assert identities with headers; empty = any cert of that CA.
    #[arg(long, value_delimiter = ',')]
    pub requestheader_allowed_names: Vec<String>,
    /// User headers (first is used when mvp asserts an identity). Default: X-Remote-User.
    #[arg(long, value_delimiter = ',')]
    pub requestheader_username_headers: Vec<String>,
    /// Group headers. Default: X-Remote-Group.
    #[arg(long, value_delimiter = ',')]
    pub requestheader_group_headers: Vec<String>,
    /// UID headers. Default: X-Remote-Uid.
    #[arg(long, value_delimiter = ',')]
    pub requestheader_uid_headers: Vec<String>,
    /// Extra-field header prefixes. Default: X-Remote-Extra-.
    #[arg(long, value_delimiter = ',')]
    pub requestheader_extra_headers_prefix: Vec<String>,
    /// mvp's front-proxy client certificate (the apiserver's --proxy-client-cert-file).
    #[arg(long)]
    pub proxy_client_cert_file: Option<PathBuf>,
    /// Its key.
    #[arg(long)]
    pub proxy_client_key_file: Option<PathBuf>,
    /// The apiserver's secure port (default upstream port; default: detected, else 6443).
    // Optional so zero-config detection can tell "not given" from "given as 6443".
    #[arg(long)]
    pub secure_port: Option<u16>,
    /// Upstream apiserver URL; default https://127.0.0.1:<secure-port>. IP literal only.
    #[arg(long)]
    pub upstream: Option<String>,
    /// CA that signed the upstream's serving cert; default --client-ca-file (kubeadm: ca.crt).
    #[arg(long)]
    pub upstream_ca_file: Option<PathBuf>,
    /// Name the upstream's serving cert is verified for (in every apiserver cert's SANs).
    #[arg(long, default_value = "kubernetes.default.svc")]
    pub upstream_server_name: String,
    /// h2 streams per client connection, as the apiserver's flag of the same name
    /// (0 = kube-apiserver's default, 100). Keep it at or below the apiserver's value.
    #[arg(long, default_value_t = 0)]
    pub http2_max_streams_per_connection: u32,
    /// How often the TLS files (serving pair, client CAs, front-proxy pair) are checked for
    /// changes, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub tls_reload_interval: f64,
}

/// A flag combination that cannot work. Operator error at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required flag is missing.
    #[error("{0}")]
    Missing(&'static str),
    /// A flag value is invalid.
    #[error("{flag} {value:?}: {why}")]
    Invalid {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        why: String,
    },
}

/// The validated front-door configuration.
#[derive(Debug, Clone)]
pub struct FrontDoorConfig {
    /// Serving cert.
    pub tls_cert_file: PathBuf,
    /// Serving key.
    pub tls_private_key_file: PathBuf,
    /// x509 client CA.
    pub client_ca_file: Option<PathBuf>,
    /// Front-proxy CA.
    pub requestheader_client_ca_file: Option<PathBuf>,
    /// Allowed front-proxy CNs.
    pub requestheader_allowed_names: Vec<String>,
    /// Header names.
    pub header_names: RequestHeaderNames,
    /// mvp's front-proxy client pair.
    pub proxy_client: Option<(PathBuf, PathBuf)>,
    /// Upstream address.
    pub upstream: SocketAddr,
    /// Upstream CA.
    pub upstream_ca_file: PathBuf,
    /// Upstream server name.
    pub upstream_server_name: String,
    /// Cert reload poll interval.
    pub tls_reload_interval: Duration,
    /// h2 streams per client connection.
    pub http2_max_streams_per_connection: u32,
}

fn header_names(
    flag: &'static str,
    values: &[String],
    default: &'static str,
) -> Result<Vec<HeaderName>, ConfigError> {
    let values: Vec<&str> = if values.is_empty() {
        vec![default]
    } else {
        values
            .iter()
            .map(String::as_str)
            .filter(|v| !v.is_empty())
            .collect()
    };
    values
        .into_iter()
        .map(|v| {
            HeaderName::from_bytes(v.trim().as_bytes()).map_err(|e| ConfigError::Invalid {
                flag,
                value: v.to_owned(),
                why: e.to_string(),
            })
        })
        .collect()
}

/// Parse `https://<ip>[:port]`.
pub fn parse_upstream(value: &str, default_port: u16) -> Result<SocketAddr, ConfigError> {
    let invalid = |why: &str| ConfigError::Invalid {
        flag: "--upstream",
        value: value.to_owned(),
        why: why.to_owned(),
    };
    let uri: http::Uri = value.parse().map_err(|_| invalid("not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(invalid("must be https://"));
    }
    let host = uri.host().ok_or_else(|| invalid("no host"))?;
    let ip: IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| invalid("host must be an IP address (DNS names are not resolved)"))?;
    Ok(SocketAddr::new(ip, uri.port_u16().unwrap_or(default_port)))
}

impl FrontDoorArgs {
    /// The secure port, kube-apiserver's default when not given.
    pub fn port(&self) -> u16 {
        self.secure_port
            .unwrap_or(crate::detect::DEFAULT_SECURE_PORT)
    }

    /// Whether the L7 front door is configured at all.
    pub fn enabled(&self) -> bool {
        self.tls_cert_file.is_some()
    }

    /// Validate into a config.
    pub fn to_config(&self) -> Result<FrontDoorConfig, ConfigError> {
        let tls_cert_file = self
            .tls_cert_file
            .clone()
            .ok_or(ConfigError::Missing("--tls-cert-file is required"))?;
        let tls_private_key_file =
            self.tls_private_key_file
                .clone()
                .ok_or(ConfigError::Missing(
                    "--tls-private-key-file is required with --tls-cert-file",
                ))?;
        let proxy_client = match (&self.proxy_client_cert_file, &self.proxy_client_key_file) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Missing(
                    "--proxy-client-cert-file and --proxy-client-key-file go together",
                ));
            }
        };
        if self.client_ca_file.is_some() && proxy_client.is_none() {
            return Err(ConfigError::Missing(
                "--client-ca-file needs --proxy-client-cert-file/--proxy-client-key-file: \
                 x509 callers can only be forwarded with front-proxy identity",
            ));
        }
        let upstream = match &self.upstream {
            Some(value) => parse_upstream(value, self.port())?,
            None => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.port()),
        };
        let upstream_ca_file = self
            .upstream_ca_file
            .clone()
            .or_else(|| self.client_ca_file.clone())
            .ok_or(ConfigError::Missing(
                "--upstream-ca-file (or --client-ca-file) is required to verify the upstream",
            ))?;
        let header_names = RequestHeaderNames {
            username: header_names(
                "--requestheader-username-headers",
                &self.requestheader_username_headers,
                "x-remote-user",
            )?,
            uid: header_names(
                "--requestheader-uid-headers",
                &self.requestheader_uid_headers,
                "x-remote-uid",
            )?,
            group: header_names(
                "--requestheader-group-headers",
                &self.requestheader_group_headers,
                "x-remote-group",
            )?,
            extra_prefix: if self.requestheader_extra_headers_prefix.is_empty() {
                vec!["x-remote-extra-".to_owned()]
            } else {
                self.requestheader_extra_headers_prefix
                    .iter()
                    .map(|p| p.trim().to_ascii_lowercase())
                    .filter(|p| !p.is_empty())
                    .collect()
            },
        };
        if !(self.tls_reload_interval.is_finite() && self.tls_reload_interval > 0.0) {
            return Err(ConfigError::Invalid {
                flag: "--tls-reload-interval",
                value: self.tls_reload_interval.to_string(),
                why: "must be a positive number of seconds".into(),
            });
        }
        Ok(FrontDoorConfig {
            tls_cert_file,
            tls_private_key_file,
            client_ca_file: self.client_ca_file.clone(),
            requestheader_client_ca_file: self.requestheader_client_ca_file.clone(),
            requestheader_allowed_names: self
                .requestheader_allowed_names
                .iter()
                .filter(|n| !n.is_empty())
                .cloned()
                .collect(),
            header_names,
            proxy_client,
            upstream,
            upstream_ca_file,
            upstream_server_name: self.upstream_server_name.clone(),
            tls_reload_interval: Duration::from_secs_f64(self.tls_reload_interval),
            http2_max_streams_per_connection: match self.http2_max_streams_per_connection {
                0 => 100,
                n => n,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls() {
        assert_eq!(
            parse_upstream("https://127.0.0.1", 6443).unwrap(),
            "127.0.0.1:6443".parse().unwrap()
        );
        assert_eq!(
            parse_upstream("https://[::1]:16443", 6443).unwrap(),
            "[::1]:16443".parse().unwrap()
        );
        assert!(parse_upstream("http://127.0.0.1", 6443).is_err());
        assert!(parse_upstream("https://apiserver.local:6443", 6443).is_err());
    }
}
