//! What the stream needs to know about the text of a QUERY event's statement: which databases
//! its names are qualified with, and which table a TRUNCATE empties. Not a SQL parser: the
//! server has parsed and run the statement already, so only names need finding.

use headwater_contract::TableId;

/// The identifier starting at byte `at` (bare, or back-quoted with ``` `` ``` for a back-quote)
/// and the byte after it; `None` when no identifier starts there.
fn identifier_at(statement: &str, at: usize) -> Option<(String, usize)> {
    let rest = statement.get(at..)?;
    if let Some(quoted) = rest.strip_prefix('`') {
        let mut name = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            if c != '`' {
                name.push(c);
            } else if quoted[i + 1..].starts_with('`') {
                name.push('`');
                chars.next();
            } else {
                return Some((name, at + 1 + i + 1));
            }
        }
        return None; // unterminated
    }
    // unquoted identifiers may hold any character from U+0080 up, besides [0-9a-zA-Z$_]
    let len: usize = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '$' || !c.is_ascii())
        .map(char::len_utf8)
        .sum();
    (len > 0).then(|| (rest[..len].to_string(), at + len))
}

/// Database names that qualify an identifier in a statement (`db.table`, `` `db`.`table` ``):
/// DDL run without a default database names its database this way.
pub(crate) fn qualified_databases(statement: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < statement.len() {
        let Some((name, end)) = identifier_at(statement, i) else {
            // an unterminated quote ends the statement's names
            if statement[i..].starts_with('`') {
                break;
            }
            i += statement[i..].chars().next().map_or(1, char::len_utf8);
            continue;
        };
        if statement[end..].starts_with('.') && !found.contains(&name) {
            found.push(name);
        }
        i = end;
    }
    found
}

/// The table a `TRUNCATE [TABLE] [db.]name` statement empties, unqualified names taken to be in
/// `default_db` (the event's current database); `None` for any other statement.
pub(crate) fn truncated_table(statement: &str, default_db: &str) -> Option<TableId> {
    let rest = statement.trim_start();
    let after_keyword = strip_keyword(rest, "TRUNCATE")?;
    let rest = after_keyword.trim_start();
    // `TABLE` is optional, and `table` may itself be the name of the table
    let rest = match strip_keyword(rest, "TABLE") {
        Some(after) if after.trim_start().chars().next().is_some_and(|c| c != ';') => {
            after.trim_start()
        }
        _ => rest,
    };
    let (first, end) = identifier_at(rest, 0)?;
    let (namespace, table) = match rest[end..].trim_start().strip_prefix('.') {
        Some(qualified) => {
            let (table, _) = identifier_at(qualified.trim_start(), 0)?;
            (first, table)
        }
        None if default_db.is_empty() => return None,
        None => (default_db.to_string(), first),
    };
    Some(TableId { namespace, table })
}

/// `text` after `keyword` (any case) when it starts with it as a whole word.
fn strip_keyword<'t>(text: &'t str, keyword: &str) -> Option<&'t str> {
    let head = text.get(..keyword.len())?;
    let rest = &text[keyword.len()..];
    let whole_word = rest
        .chars()
        .next()
        .is_none_or(|c| c.is_whitespace() || c == '`');
    (head.eq_ignore_ascii_case(keyword) && whole_word).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::{qualified_databases, truncated_table};
    use headwater_contract::TableId;

    #[test]
    fn finds_the_database_of_qualified_names() {
        assert_eq!(
            qualified_databases("ALTER TABLE `shop`.`orders` ADD x INT"),
            ["shop"]
        );
        assert_eq!(
            qualified_databases("alter table shop.orders add x int"),
            ["shop"]
        );
        assert_eq!(qualified_databases("RENAME TABLE a.t1 TO b.t2"), ["a", "b"]);
        assert_eq!(qualified_databases("DROP TABLE `we``ird`.t"), ["we`ird"]);
        assert_eq!(qualified_databases("DROP TABLE café.t"), ["café"]);
        assert!(
            qualified_databases("CREATE TABLE t (x DECIMAL(5,2) DEFAULT 1.5)")
                .iter()
                .all(|d| d != "t")
        );
        assert!(qualified_databases("DROP TABLE `unterminated.t").is_empty());
    }

    fn id(namespace: &str, table: &str) -> Option<TableId> {
        Some(TableId {
            namespace: namespace.into(),
            table: table.into(),
        })
    }

    #[test]
    fn finds_the_table_a_truncate_empties() {
        assert_eq!(truncated_table("TRUNCATE TABLE t", "shop"), id("shop", "t"));
        assert_eq!(truncated_table("truncate t", "shop"), id("shop", "t"));
        assert_eq!(
            truncated_table("  TRUNCATE TABLE `other`.`order lines` WAIT 5", "shop"),
            id("other", "order lines")
        );
        assert_eq!(
            truncated_table("TRUNCATE other . t;", "shop"),
            id("other", "t")
        );
        assert_eq!(
            truncated_table("TRUNCATE `table`", "shop"),
            id("shop", "table")
        );
        assert_eq!(
            truncated_table("TRUNCATE table", "shop"),
            id("shop", "table")
        );
        assert_eq!(truncated_table("TRUNCATE TABLE t", ""), None);
        assert_eq!(truncated_table("TRUNCATED_LOG t", "shop"), None);
        assert_eq!(truncated_table("DROP TABLE t", "shop"), None);
    }
}
