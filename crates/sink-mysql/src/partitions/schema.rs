//! Reading a table's partition layout from `information_schema`.

use mysql_async::prelude::Queryable;

use super::errors::PartitionError;
use super::planner::{validate_layout, PartitionBound, UpperBound};

/// Read the layout of `database.table` from `information_schema.PARTITIONS`, in partition order,
/// and check that it is one [`plan`](super::plan) can work on, partitioned by `column`.
pub async fn read_partitions(
    conn: &mut mysql_async::Conn,
    database: &str,
    table: &str,
    column: &str,
) -> Result<Vec<PartitionBound>, PartitionError> {
    type PartitionRow = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<PartitionRow> = conn
        .exec(
            "SELECT PARTITION_NAME, PARTITION_DESCRIPTION, PARTITION_METHOD, \
             PARTITION_EXPRESSION, SUBPARTITION_NAME \
             FROM information_schema.PARTITIONS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
             ORDER BY PARTITION_ORDINAL_POSITION, SUBPARTITION_ORDINAL_POSITION",
            (database, table),
        )
        .await
        .map_err(|source| PartitionError::Mysql {
            table: table.to_owned(),
            what: "reading information_schema.PARTITIONS".to_owned(),
            source,
        })?;
    let unexpected = |detail: String| PartitionError::UnexpectedLayout {
        database: database.to_owned(),
        table: table.to_owned(),
        detail,
    };
    if rows.is_empty() {
        return Err(PartitionError::TableMissing {
            database: database.to_owned(),
            table: table.to_owned(),
        });
    }
    let mut layout = Vec::with_capacity(rows.len());
    for (name, description, method, expression, subpartition) in rows {
        let Some(name) = name else {
            return Err(unexpected("the table is not partitioned".into()));
        };
        if method.as_deref() != Some("RANGE COLUMNS") {
            return Err(unexpected(format!(
                "it is partitioned by {}",
                method.as_deref().unwrap_or("?")
            )));
        }
        let found = expression.as_deref().unwrap_or("").trim().trim_matches('`');
        if !found.eq_ignore_ascii_case(column) {
            return Err(unexpected(format!("it is partitioned on {found}")));
        }
        if subpartition.is_some() {
            return Err(unexpected("it has subpartitions".into()));
        }
        let description = description.unwrap_or_default();
        let Some(less_than) = UpperBound::parse(&description) else {
            return Err(unexpected(format!(
                "cannot read the bound {description} of partition {name}"
            )));
        };
        layout.push(PartitionBound { name, less_than });
    }
    validate_layout(&layout).map_err(unexpected)?;
    Ok(layout)
}
