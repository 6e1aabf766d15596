//! `cargo xtask image`: the agent's OCI image, built without a container engine or registry.
//!
//! The recipe is the Dockerfile's final stage, done by hand so that it runs anywhere and gives the
//! same bytes for the same inputs:
//! - the release binary (whose build script embeds the eBPF object);
//! - the shared libraries it links, as `ldd` resolves them on the build machine (the C library,
//!   the loader, libgcc_s), at the paths the loader looks for them;
//! - the build machine's CA bundle (https webhooks verify their servers with it);
//! - the licence, the third-party notices and the SBOM under `/usr/share/doc/trustmap/`;
//! - an empty `/tmp`.
//!
//! That is one layer, written as a tar with sorted entries, owner root, fixed modes and every
//! time set to the source date (`SOURCE_DATE_EPOCH`, else the time of the commit checked out),
//! and gzipped with no name and no time in its header. The config, manifest and index are JSON
//! with sorted keys. The result is an OCI image layout, archived as a tar too
//! (`target/image/trustmap-VERSION-ARCH.oci.tar`), which `podman load`, `skopeo copy
//! oci-archive:…` and `ctr images import` take. The SBOM (CycloneDX, by cargo-cyclonedx: the
//! crates; plus the Debian packages the copied files come from) is written beside it too.

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
    str::FromStr as _,
};

use anyhow::{Context as _, bail};
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, HistoryBuilder, ImageConfigurationBuilder, ImageIndexBuilder,
    ImageManifestBuilder, MediaType, Os, RootFsBuilder, Sha256Digest,
};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::{cargo, run, setup::BuildTools};

/// The name the chart and the kustomize base give the image (`image.repository` and
/// `image.tag` in the chart's values).
pub const REPOSITORY: &str = "trustmap";

/// What [`build`] made.
pub struct Image {
    /// The OCI archive.
    pub archive: PathBuf,
    /// The SBOM written beside it.
    pub sbom: PathBuf,
    /// The manifest's digest, `sha256:…`: what a registry and `kubectl` call the image.
    pub digest: String,
    /// The archive's size in bytes.
    pub size: u64,
    /// `trustmap:VERSION`.
    pub reference: String,
}

/// A file of the image's one layer.
struct Entry {
    path: String,
    mode: u32,
    data: Option<Vec<u8>>,
}

/// Builds the image. `_built_by` is proof that setup's first part ran: the agent's build script
/// finds bpf-linker where it put it.
pub fn build(root: &Path, _built_by: &BuildTools, cyclonedx: &Path) -> anyhow::Result<Image> {
    run(
        root,
        cargo().args([
            "build",
            "--release",
            "--locked",
            "-p",
            "trustmap",
            "--bin",
            "trustmap",
        ]),
    )?;
    let binary = root.join("target/release/trustmap");
    let version = env!("CARGO_PKG_VERSION");
    let arch = go_arch()?;
    let out = root.join("target/image");
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let epoch = source_date_epoch(root)?;

    let libraries = linked_libraries(&binary)?;
    let sbom = sbom(root, cyclonedx, &libraries)?;
    let sbom_path = out.join(format!("{REPOSITORY}-{version}-{arch}.cdx.json"));
    fs::write(&sbom_path, &sbom).with_context(|| format!("writing {}", sbom_path.display()))?;

    let mut entries = vec![Entry {
        path: "usr/local/bin/trustmap".into(),
        mode: 0o755,
        data: Some(read(&binary)?),
    }];
    for lib in &libraries {
        entries.push(Entry {
            path: lib.path.trim_start_matches('/').to_owned(),
            mode: 0o755,
            data: Some(read(Path::new(&lib.path))?),
        });
    }
    entries.push(Entry {
        path: "etc/ssl/certs/ca-certificates.crt".into(),
        mode: 0o644,
        data: Some(read(Path::new("/etc/ssl/certs/ca-certificates.crt"))?),
    });
    for (name, file) in [("LICENSE", "LICENSE"), ("THIRD-PARTY.md", "THIRD-PARTY.md")] {
        entries.push(Entry {
            path: format!("usr/share/doc/trustmap/{name}"),
            mode: 0o644,
            data: Some(read(&root.join(file))?),
        });
    }
    entries.push(Entry {
        path: "usr/share/doc/trustmap/sbom.cdx.json".into(),
        mode: 0o644,
        data: Some(sbom.clone()),
    });
    entries.push(Entry {
        path: "tmp".into(),
        mode: 0o1777,
        data: None,
    });
    let layer_tar = tar_of(entries, epoch)?;
    let diff_id = sha256(&layer_tar);
    let layer = gzip(&layer_tar)?;

    let created = rfc3339(epoch);
    let config = ImageConfigurationBuilder::default()
        .architecture(Arch::from(arch.as_str()))
        .os(Os::Linux)
        .created(created.clone())
        .config(
            ConfigBuilder::default()
                .entrypoint(vec!["/usr/local/bin/trustmap".to_owned()])
                .cmd(vec!["--help".to_owned()])
                .env(vec!["PATH=/usr/local/bin".to_owned()])
                .labels(
                    labels(version, &created)
                        .into_iter()
                        .collect::<HashMap<_, _>>(),
                )
                .build()?,
        )
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![format!("sha256:{diff_id}")])
                .build()?,
        )
        .history(vec![
            HistoryBuilder::default()
                .created(created.clone())
                .created_by(format!(
                    "cargo xtask image: trustmap {version}, the libraries it links and a CA bundle"
                ))
                .build()?,
        ])
        .build()?;
    let config = canonical_json(&config)?;

    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    let config_desc = descriptor(MediaType::ImageConfig, &config, None)?;
    let layer_desc = descriptor(MediaType::ImageLayerGzip, &layer, None)?;
    blobs.push((sha256(&config), config));
    blobs.push((sha256(&layer), layer));
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config_desc)
        .layers(vec![layer_desc])
        .annotations(
            labels(version, &created)
                .into_iter()
                .collect::<HashMap<_, _>>(),
        )
        .build()?;
    let manifest = canonical_json(&manifest)?;
    let digest = sha256(&manifest);
    let reference = format!("{REPOSITORY}:{version}");
    let refs: BTreeMap<String, String> = [
        (
            "org.opencontainers.image.ref.name".to_owned(),
            version.to_owned(),
        ),
        // containerd's `ctr images import` names the image from this.
        (
            "io.containerd.image.name".to_owned(),
            format!("docker.io/library/{reference}"),
        ),
    ]
    .into_iter()
    .collect();
    let manifest_desc = descriptor(MediaType::ImageManifest, &manifest, Some(refs))?;
    blobs.push((digest.clone(), manifest));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest_desc])
        .build()?;
    let index = canonical_json(&index)?;

    let mut layout = vec![
        Entry {
            path: "oci-layout".into(),
            mode: 0o644,
            data: Some(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
        },
        Entry {
            path: "index.json".into(),
            mode: 0o644,
            data: Some(index),
        },
    ];
    for (hex, blob) in blobs {
        layout.push(Entry {
            path: format!("blobs/sha256/{hex}"),
            mode: 0o644,
            data: Some(blob),
        });
    }
    let archive_bytes = tar_of(layout, epoch)?;
    let archive = out.join(format!("{REPOSITORY}-{version}-{arch}.oci.tar"));
    let partial = archive.with_extension("tar.partial");
    fs::write(&partial, &archive_bytes)
        .with_context(|| format!("writing {}", partial.display()))?;
    fs::rename(&partial, &archive)?;
    Ok(Image {
        archive,
        sbom: sbom_path,
        digest: format!("sha256:{digest}"),
        size: archive_bytes.len() as u64,
        reference,
    })
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// The image's labels, also the manifest's annotations.
fn labels(version: &str, created: &str) -> BTreeMap<String, String> {
    [
        ("org.opencontainers.image.title", "trustmap"),
        (
            "org.opencontainers.image.description",
            "Learns least-privilege Kubernetes NetworkPolicies from the connections pods really make",
        ),
        ("org.opencontainers.image.version", version),
        ("org.opencontainers.image.licenses", "Apache-2.0"),
        ("org.opencontainers.image.created", created),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The machine's architecture as OCI names it (Go's GOARCH).
fn go_arch() -> anyhow::Result<String> {
    Ok(match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "powerpc64" => "ppc64le",
        other => bail!("no OCI architecture name for {other}"),
    }
    .to_owned())
}

/// `SOURCE_DATE_EPOCH` (the reproducible-builds convention), else the checked-out commit's
/// time, so that two builds of one commit agree.
fn source_date_epoch(root: &Path) -> anyhow::Result<u64> {
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        return v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v} is not a number of seconds"));
    }
    let out = Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(root)
        .output()
        .context("running git log for the commit time (or set SOURCE_DATE_EPOCH)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("git log gave no commit time ({text:?}); set SOURCE_DATE_EPOCH"))
}

/// Seconds since the epoch as RFC 3339 UTC, without a date library.
fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// A shared library the binary needs, and the Debian package that holds it.
pub struct Library {
    /// Where the loader finds it, as `ldd` prints it (the interpreter's path for the loader).
    pub path: String,
    /// `(package, version)` from dpkg, when a package owns the file.
    pub package: Option<(String, String)>,
}

/// The libraries `ldd` resolves for `binary`, sorted by path.
fn linked_libraries(binary: &Path) -> anyhow::Result<Vec<Library>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    if !out.status.success() {
        bail!(
            "ldd {} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut paths = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let line = line.trim();
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)", or the loader's own line
        // "/lib64/ld-linux-x86-64.so.2 (0x…)"; linux-vdso has no file.
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            paths.push(p.to_owned());
        } else if line.contains("not found") {
            bail!("ldd: {line}");
        }
    }
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .map(|path| {
            let package = owning_package(&path);
            Ok(Library { path, package })
        })
        .collect()
}

/// The Debian package (and its version) owning a file, looked up under the path and under its
/// canonical path (merged /usr makes /lib a link to /usr/lib).
fn owning_package(path: &str) -> Option<(String, String)> {
    let canonical = fs::canonicalize(path).ok()?;
    for candidate in [
        path.to_owned(),
        canonical.to_string_lossy().into_owned(),
        canonical
            .to_string_lossy()
            .trim_start_matches("/usr")
            .to_owned(),
    ] {
        let Ok(out) = Command::new("dpkg-query").args(["-S", &candidate]).output() else {
            continue;
        };
        if !out.status.success() {
            continue;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(package) = text.lines().next().and_then(|l| l.split(':').next()) else {
            continue;
        };
        let version = Command::new("dpkg-query")
            .args(["-W", "-f=${Version}", package])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())?;
        return Some((package.trim().to_owned(), version));
    }
    None
}

/// The CycloneDX SBOM of the trustmap crate (cargo-cyclonedx), with the Debian packages of the
/// copied libraries added as components, keys sorted.
fn sbom(root: &Path, cyclonedx: &Path, libraries: &[Library]) -> anyhow::Result<Vec<u8>> {
    // cargo-cyclonedx writes `<name>.json` (the override replaces `<crate>.cdx`) beside the
    // manifest of every workspace member, whatever --manifest-path says: the agent's is kept,
    // and all of them removed, so that the source tree stays as it was.
    const NAME: &str = "trustmap-image-sbom";
    let members = ["agent", "agent-ebpf", "xtask", "tests"];
    let remove_all = || {
        for m in members {
            let _ = fs::remove_file(root.join(m).join(format!("{NAME}.json")));
        }
    };
    let made = run(
        root,
        Command::new(cyclonedx)
            .args([
                "cyclonedx",
                "--format",
                "json",
                "--spec-version",
                "1.5",
                "--manifest-path",
                "agent/Cargo.toml",
                "--override-filename",
                NAME,
            ])
            .env("CARGO", "cargo"),
    );
    let written = root.join("agent").join(format!("{NAME}.json"));
    let text = made.and_then(|()| {
        fs::read(&written).with_context(|| format!("reading {}", written.display()))
    });
    remove_all();
    let mut bom: Value =
        serde_json::from_slice(&text?).context("parsing cargo-cyclonedx's SBOM")?;
    // Its serial number is random and its timestamp is the current time: both would change the
    // image's digest on every build.
    if let Some(obj) = bom.as_object_mut() {
        obj.remove("serialNumber");
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("timestamp");
        }
    }
    // The CA bundle is generated by ca-certificates' scripts, so no package owns the file.
    let ca = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "ca-certificates"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            (
                "ca-certificates".to_owned(),
                String::from_utf8_lossy(&o.stdout).trim().to_owned(),
            )
        });
    let mut debs: Vec<Value> = libraries
        .iter()
        .filter_map(|l| l.package.clone())
        .chain(ca)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|(name, version)| {
            serde_json::json!({
                "type": "library",
                "bom-ref": format!("deb:{name}@{version}"),
                "name": name,
                "version": version,
                "purl": format!("pkg:deb/debian/{name}@{version}"),
                "description": "copied into the image from the build machine",
            })
        })
        .collect();
    if let Some(components) = bom.get_mut("components").and_then(Value::as_array_mut) {
        components.append(&mut debs);
    } else {
        bom["components"] = Value::Array(debs);
    }
    Ok(serde_json::to_vec_pretty(&sorted(bom))?)
}

/// JSON with every object's keys sorted, whatever map type serde_json was built with.
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let entries: BTreeMap<String, Value> =
                map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            Value::Object(entries.into_iter().collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// A value as compact JSON with sorted keys: the oci-spec types keep labels and annotations in
/// hash maps, whose order would change the digest from run to run.
fn canonical_json(v: &impl serde::Serialize) -> anyhow::Result<Vec<u8>> {
    Ok(serde_json::to_vec(&sorted(serde_json::to_value(v)?))?)
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn descriptor(
    media_type: MediaType,
    bytes: &[u8],
    annotations: Option<BTreeMap<String, String>>,
) -> anyhow::Result<Descriptor> {
    let digest = Sha256Digest::from_str(&sha256(bytes))?;
    let mut d = Descriptor::new(media_type, bytes.len() as u64, digest);
    if let Some(a) = annotations {
        d.set_annotations(Some(a.into_iter().collect()));
    }
    Ok(d)
}

/// A tar of `entries` and their parent directories, sorted by path, owned by root, every time
/// set to `epoch`.
fn tar_of(entries: Vec<Entry>, epoch: u64) -> anyhow::Result<Vec<u8>> {
    let mut all: BTreeMap<String, Entry> = BTreeMap::new();
    for e in entries {
        let mut parent = Path::new(&e.path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            let key = p.to_string_lossy().into_owned();
            all.entry(key.clone()).or_insert(Entry {
                path: key,
                mode: 0o755,
                data: None,
            });
            parent = p.parent();
        }
        all.insert(e.path.clone(), e);
    }
    let mut builder = tar::Builder::new(Vec::new());
    for (path, e) in all {
        let mut header = tar::Header::new_ustar();
        header.set_mtime(epoch);
        header.set_uid(0);
        header.set_gid(0);
        header.set_username("root")?;
        header.set_groupname("root")?;
        header.set_mode(e.mode);
        match &e.data {
            Some(data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(data.len() as u64);
                builder
                    .append_data(&mut header, &path, data.as_slice())
                    .with_context(|| format!("adding {path} to a tar"))?;
            }
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                builder
                    .append_data(&mut header, format!("{path}/"), std::io::empty())
                    .with_context(|| format!("adding {path}/ to a tar"))?;
            }
        }
    }
    Ok(builder.into_inner()?)
}

/// gzip with no file name and a zero time in its header, so that equal input gives equal output.
fn gzip(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes)?;
    Ok(enc.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_688_000 + 3661), "2026-12-08T01:01:01Z");
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let v = serde_json::json!({"b": {"z": 1, "a": [{"y": 2, "x": 3}]}, "a": 0});
        assert_eq!(
            String::from_utf8(canonical_json(&v).unwrap()).unwrap(),
            r#"{"a":0,"b":{"a":[{"x":3,"y":2}],"z":1}}"#
        );
    }

    #[test]
    fn layer_tar_is_the_same_bytes_for_the_same_entries_in_any_order() {
        let entries = |rev: bool| {
            let mut v = vec![
                Entry {
                    path: "usr/local/bin/trustmap".into(),
                    mode: 0o755,
                    data: Some(b"bin".to_vec()),
                },
                Entry {
                    path: "etc/ssl/certs/ca-certificates.crt".into(),
                    mode: 0o644,
                    data: Some(b"ca".to_vec()),
                },
            ];
            if rev {
                v.reverse();
            }
            v
        };
        let a = tar_of(entries(false), 1_000).unwrap();
        let b = tar_of(entries(true), 1_000).unwrap();
        assert_eq!(a, b);
        assert_eq!(gzip(&a).unwrap(), gzip(&b).unwrap());
        let mut names = Vec::new();
        let mut archive = tar::Archive::new(a.as_slice());
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            assert_eq!(e.header().mtime().unwrap(), 1_000);
            assert_eq!(e.header().uid().unwrap(), 0);
            names.push(e.path().unwrap().to_string_lossy().into_owned());
        }
        assert_eq!(
            names,
            [
                "etc/",
                "etc/ssl/",
                "etc/ssl/certs/",
                "etc/ssl/certs/ca-certificates.crt",
                "usr/",
                "usr/local/",
                "usr/local/bin/",
                "usr/local/bin/trustmap"
            ]
        );
    }
}
