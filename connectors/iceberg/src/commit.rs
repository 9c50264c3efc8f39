//! A commit: a new snapshot (its data files written already, its manifests written here)
//! published as the table's next metadata, recording the round and the position.

use crate::table::IcebergTarget;
use headwater_contract::ConnectorError;
use headwater_lakehouse::TableCommit;

pub async fn commit(
    target: &mut IcebergTarget,
    commit: TableCommit<IcebergTarget>,
) -> Result<(), ConnectorError> {
    let (round, position) = (commit.round, commit.position.clone());
    let (metadata, live) = target.snapshot_for(commit).await?;
    target.publish(metadata).await?;
    if let Some(id) = target.metadata.current_snapshot_id() {
        target.live = Some((id, live));
    }
    target.round = round;
    target.committed = position;
    Ok(())
}
