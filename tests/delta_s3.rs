//! The Delta sink on a real S3-compatible server (s3s-fs, a private instance this test stops and
//! starts): the mirror and changelog under a random load with a snapshot, the server stopped
//! for 30 seconds while changes go on, then SIGKILLs — nothing lost, nothing repeated, and the
//! pipeline resumes by itself.

mod common;

use common::delta::Lakehouse;
use common::lakehouse_cases;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_tables_survive_a_stopped_server_and_sigkill() {
    lakehouse_cases::s3_tables_survive_a_stopped_server_and_sigkill(
        Lakehouse::Delta,
        "hw_delta_s3",
    )
    .await;
}
