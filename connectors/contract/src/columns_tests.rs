use super::*;
use crate::schema::TableId;

fn column(name: &str, field_type: FieldType) -> Column {
    Column {
        name: name.into(),
        field_type,
        nullable: true,
        sql_type: "t".into(),
    }
}

fn customers() -> TableSchema {
    TableSchema {
        id: TableId {
            namespace: "shop".into(),
            table: "customers".into(),
        },
        version: 2,
        columns: vec![
            column("id", FieldType::Long),
            column("Email", FieldType::String),
            column("ssn", FieldType::String),
            column("card", FieldType::Long),
            column("note", FieldType::String),
            column("photo", FieldType::Bytes),
        ],
        primary_key: vec![0],
    }
}

fn rules(toml_text: &str) -> Result<ColumnRules, String> {
    let config: ColumnRulesConfig = serde_json::from_value(
        toml_text
            .parse::<serde_json::Value>()
            .expect("test rules are JSON"),
    )
    .expect("test rules parse");
    config.compile()
}

fn text(value: &str) -> Value<'_> {
    Value::Text(Cow::Borrowed(value))
}

#[test]
fn excluded_columns_leave_the_schema_and_the_row_and_the_key_is_renumbered() {
    let rules = rules(r#"{"exclude": ["shop.customers.ssn", "*.*.card"]}"#).unwrap();
    let mut schema = customers();
    schema.primary_key = vec![4];
    let plan = rules.plan(&schema).unwrap().expect("a plan");
    let names: Vec<&str> = plan
        .output()
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["id", "Email", "note", "photo"]);
    assert_eq!(
        plan.output().primary_key,
        [2],
        "note is now the third column"
    );
    assert_eq!(plan.output().version, 2);
    let mut row = vec![
        Value::Long(1),
        text("a@b"),
        text("123-45"),
        Value::Long(4111),
        text("hi"),
        Value::Null,
    ];
    plan.apply(&mut row);
    assert_eq!(
        row,
        [Value::Long(1), text("a@b"), text("hi"), Value::Null],
        "the excluded values are gone, not blanked"
    );
}

#[test]
fn mask_hash_and_truncate_rewrite_values_before_encoding() {
    let rules = rules(
        r#"{"mask": {"shop.customers.card": 4}, "hash": ["shop.customers.email"],
            "hash_salt": "pepper", "truncate": {"shop.customers.note": 3, "shop.customers.photo": 2}}"#,
    )
    .unwrap();
    let plan = rules.plan(&customers()).unwrap().expect("a plan");
    let types: Vec<&FieldType> = plan
        .output()
        .columns
        .iter()
        .map(|c| &c.field_type)
        .collect();
    assert_eq!(
        types,
        [
            &FieldType::Long,
            &FieldType::String,
            &FieldType::String,
            &FieldType::String,
            &FieldType::String,
            &FieldType::Bytes
        ],
        "a masked number becomes text"
    );
    assert!(plan.output().columns[1].sql_type.contains("hashed"));
    let mut row = vec![
        Value::Long(1),
        text("a@b.example"),
        Value::Null,
        Value::Long(4111_1111),
        text("héllo"),
        Value::Bytes(Cow::Borrowed(&[1, 2, 3])),
    ];
    plan.apply(&mut row);
    let expected_hash = hex::encode(Sha256::digest(b"peppera@b.example"));
    assert_eq!(
        row,
        [
            Value::Long(1),
            Value::Text(Cow::Owned(expected_hash)),
            Value::Null,
            text("****"),
            text("hél"),
            Value::Bytes(Cow::Borrowed(&[1, 2])),
        ],
        "the column name matched without regard to case (Email)"
    );
}

#[test]
fn include_keeps_the_named_columns_and_the_key_of_the_tables_it_names() {
    let rules = rules(r#"{"include": ["shop.customers.email"]}"#).unwrap();
    let plan = rules.plan(&customers()).unwrap().expect("a plan");
    let names: Vec<&str> = plan
        .output()
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["id", "Email"]);
    let mut other = customers();
    other.id.table = "orders".into();
    assert!(
        rules.plan(&other).unwrap().is_none(),
        "tables include does not name keep every column"
    );
}

#[test]
fn rules_that_would_touch_the_primary_key_or_misfit_a_type_name_the_key_to_change() {
    for (config, key) in [
        (r#"{"exclude": ["shop.customers.id"]}"#, "excluded"),
        (r#"{"mask": {"shop.*.id": 3}}"#, "masked"),
        (r#"{"hash": ["*.*.id"], "hash_salt": "s"}"#, "hashed"),
    ] {
        let err = rules(config)
            .unwrap()
            .plan(&customers())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("primary-key column shop.customers.id") && err.contains(key),
            "{err}"
        );
    }
    let err = rules(r#"{"truncate": {"shop.customers.card": 2}}"#)
        .unwrap()
        .plan(&customers())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("source.columns.truncate") && err.contains("card"),
        "{err}"
    );
}

#[test]
fn bad_rules_are_config_errors_naming_the_key() {
    for (config, expected) in [
        (
            r#"{"exclude": ["customers.ssn"]}"#,
            "source.columns.exclude",
        ),
        (
            r#"{"hash": ["a.b.c"]}"#,
            "source.columns.hash needs source.columns.hash_salt",
        ),
        (
            r#"{"hash": ["a.b.c"], "hash_salt": ""}"#,
            "hash_salt is empty",
        ),
        (r#"{"mask": {"a.b.c": 0}}"#, "source.columns.mask"),
        (r#"{"include": ["a.b.[c"]}"#, "not a valid glob"),
    ] {
        let err = rules(config).unwrap_err();
        assert!(err.contains(expected), "{config}: {err}");
    }
    assert!(rules("{}").unwrap().plan(&customers()).unwrap().is_none());
    let debug = format!(
        "{:?}",
        serde_json::from_str::<ColumnRulesConfig>(r#"{"hash_salt": "secret"}"#).unwrap()
    );
    assert!(!debug.contains("secret"), "{debug}");
}

fn handled(decimal: DecimalHandling, binary: BinaryHandling) -> ColumnRules {
    ColumnRulesConfig::default()
        .compile_with(ValueHandling { decimal, binary })
        .unwrap()
}

fn money() -> TableSchema {
    TableSchema {
        id: TableId {
            namespace: "shop".into(),
            table: "prices".into(),
        },
        version: 1,
        columns: vec![
            column(
                "price",
                FieldType::Decimal {
                    precision: 10,
                    scale: 2,
                },
            ),
            column("ratio", FieldType::DecimalString),
            column("blob", FieldType::Bytes),
            column(
                "list",
                FieldType::Array(Box::new(FieldType::Decimal {
                    precision: 5,
                    scale: 1,
                })),
            ),
            column("n", FieldType::Long),
        ],
        primary_key: vec![0],
    }
}

fn money_row() -> Vec<Value<'static>> {
    vec![
        Value::Decimal(crate::avro::Unscaled::parse("-12.30", 2).unwrap()),
        text("NaN"),
        Value::Bytes(Cow::Borrowed(&[0xde, 0xad, 0xbe, 0xef, 0x01])),
        Value::Array(vec![
            Value::Decimal(crate::avro::Unscaled::parse("4.5", 1).unwrap()),
            Value::Null,
        ]),
        Value::Long(7),
    ]
}

#[test]
fn decimal_and_binary_handling_change_types_and_values_key_included() {
    let plan = handled(DecimalHandling::String, BinaryHandling::Base64)
        .plan(&money())
        .unwrap()
        .expect("a plan");
    let types: Vec<&FieldType> = plan
        .output()
        .columns
        .iter()
        .map(|c| &c.field_type)
        .collect();
    assert_eq!(
        types,
        [
            &FieldType::String,
            &FieldType::DecimalString,
            &FieldType::String,
            &FieldType::Array(Box::new(FieldType::String)),
            &FieldType::Long
        ]
    );
    let mut row = money_row();
    plan.apply(&mut row);
    assert_eq!(
        row,
        [
            text("-12.30"),
            text("NaN"),
            text("3q2+7wE="),
            Value::Array(vec![text("4.5"), Value::Null]),
            Value::Long(7)
        ]
    );

    let plan = handled(DecimalHandling::Double, BinaryHandling::Hex)
        .plan(&money())
        .unwrap()
        .expect("a plan");
    let mut row = money_row();
    plan.apply(&mut row);
    assert_eq!(row[0], Value::Double(-12.3));
    assert!(matches!(row[1], Value::Double(x) if x.is_nan()));
    assert_eq!(row[2], text("deadbeef01"));
    assert_eq!(row[3], Value::Array(vec![Value::Double(4.5), Value::Null]));
    assert_eq!(plan.output().columns[1].field_type, FieldType::Double);

    assert!(
        handled(DecimalHandling::Precise, BinaryHandling::Bytes)
            .plan(&money())
            .unwrap()
            .is_none(),
        "the defaults change nothing"
    );
    assert!(
        handled(DecimalHandling::String, BinaryHandling::Hex)
            .plan(&customers_without_decimals())
            .unwrap()
            .is_none(),
        "a table without such columns needs no plan"
    );
}

fn customers_without_decimals() -> TableSchema {
    let mut schema = customers();
    schema.columns.retain(|c| c.field_type != FieldType::Bytes);
    schema
}
