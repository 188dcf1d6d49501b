//! A clamd of a test's own: Debian's `clamav-daemon` (`scripts/test-tools clamd`, named by
//! `TESTBED_CLAMD`) on a free port, loading one signature database that the test writes,
//! since the official one cannot be downloaded here: the EICAR test file's MD5.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, testbed_tool};

/// The EICAR test file: harmless bytes every antivirus reports as infected.
pub const EICAR: &[u8] = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// The MD5 of [`EICAR`], by which clamd's `.hdb` database names it (`md5sum` says so).
const EICAR_MD5: &str = "44d88612fea8a8f36de82e1278abb02f";

/// The name clamd gives a match of the database [`Clamd`] writes.
pub const EICAR_SIGNATURE: &str = "Eicar-Test-Signature.UNOFFICIAL";

/// A running clamd, stopped when dropped.
#[derive(Debug)]
pub struct Clamd {
    child: Child,
    directory: PathBuf,
    /// `127.0.0.1:port`.
    pub address: String,
}

impl Clamd {
    /// Starts clamd with the EICAR signature only, and waits until it answers.
    pub async fn start() -> Self {
        let clamd = testbed_tool("TESTBED_CLAMD", "clamd");
        let port = free_port();
        let directory = std::env::temp_dir().join(format!("posts-api-clamd-{port}"));
        let database = directory.join("db");
        std::fs::create_dir_all(&database).expect("a clamd directory");
        std::fs::write(
            database.join("eicar.hdb"),
            format!("{EICAR_MD5}:{}:Eicar-Test-Signature\n", EICAR.len()),
        )
        .expect("the signature database");
        let config = directory.join("clamd.conf");
        std::fs::write(
            &config,
            format!(
                "Foreground yes\nDatabaseDirectory {}\nTCPSocket {port}\nTCPAddr 127.0.0.1\n\
                 LogFile {}\nStreamMaxLength 100M\n",
                database.display(),
                directory.join("clamd.log").display()
            ),
        )
        .expect("the clamd configuration");
        // Owned at once, so that it is stopped however this ends.
        let clamd = Self {
            child: Command::new(clamd)
                .arg("-c")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("clamd starts"),
            directory,
            address: format!("127.0.0.1:{port}"),
        };
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(&clamd.address).await.is_ok() {
                return clamd;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("clamd did not listen on {} within 15 s", clamd.address);
    }
}

impl Drop for Clamd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}
