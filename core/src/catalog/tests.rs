//! Unit tests of the catalog: the built-ins parse and check, declared datasets are
//! first-class, inconsistent declarations are refused.

use super::*;

#[test]
fn builtin_parses_and_checks() {
    let file = CatalogFile::parse(BUILTIN, true, "builtin").expect("builtin parses");
    let mut c = Catalog::default();
    c.apply(file).expect("builtin is consistent");
    assert_eq!(c, Catalog::builtin());
    let person = c.dataset("person").expect("person");
    for f in [
        "citizen_id",
        "name",
        "former_names",
        "sex_code",
        "ethnicity_code",
        "birth_date",
        "birthplace_code",
        "nationality_code",
        "hukou_region_code",
        "hukou_address",
        "residence_address",
        "marital_status_code",
        "education_code",
        "mobile_phone",
        "person_status",
        "death_date",
        "source_dept",
        "updated_at",
    ] {
        person.require_field(f).expect(f);
    }
    let le = c.dataset("legal_entity").expect("legal_entity");
    for f in [
        "uscc",
        "org_name",
        "entity_type",
        "legal_rep_name",
        "legal_rep_id",
        "registered_capital",
        "establish_date",
        "registration_authority",
        "business_scope",
        "domicile",
        "domicile_region_code",
        "industry_code",
        "reg_status",
        "cancel_date",
        "contact_phone",
    ] {
        le.require_field(f).expect(f);
    }
    assert_eq!(c.code_tables["ethnicity"].len(), 58);
    assert_eq!(
        person.field("marital_status_code").map(|f| f.share),
        Some(ShareType::NotShared)
    );
}

#[test]
fn json_dataset_becomes_first_class_and_diff_names_it() {
    let mut c = Catalog::builtin();
    let before = c.clone();
    let file = CatalogFile::parse(
        r#"{"datasets":[{"name":"gdp","label":"地区生产总值","key":"region_code",
            "cluster_field":"region_code","provider":"统计局",
            "fields":[{"name":"region_code","label":"区划","type":"utf8","standard":"region_code","nullable":false,"share":"unconditional","grade":"L1","index":"region"},
                      {"name":"gdp","label":"GDP","type":"decimal(20,2)","share":"unconditional","grade":"L1"}]}]}"#,
        false,
        "inline",
    )
    .expect("parses");
    let changes = c.apply(file).expect("valid");
    assert_eq!(changes, vec!["+ dataset gdp (2 fields)".to_string()]);
    assert_eq!(diff(&before, &c), changes);
    assert_eq!(
        c.dataset("gdp")
            .expect("gdp")
            .arrow_schema()
            .field(1)
            .data_type(),
        &DataType::Decimal128(20, 2)
    );
}

#[test]
fn inconsistent_declarations_are_refused_and_leave_catalog_unchanged() {
    let mut c = Catalog::builtin();
    let before = c.clone();
    let cases = [
        (
            r#"{"datasets":[{"name":"x","label":"x","key":"k","provider":"p","fields":[{"name":"k","label":"k","type":"date32","standard":"uscc","nullable":false,"share":"unconditional","grade":"L1"}]}]}"#,
            "needs type utf8",
        ),
        (
            r#"{"datasets":[{"name":"x","label":"x","key":"nope","provider":"p","fields":[{"name":"k","label":"k","type":"utf8","nullable":false,"share":"unconditional","grade":"L1"}]}]}"#,
            "no field 'nope'",
        ),
        (
            r#"{"datasets":[{"name":"x","label":"x","key":"k","provider":"p","fields":[{"name":"k","label":"k","type":"utf8","standard":"code:missing","nullable":false,"share":"unconditional","grade":"L1"}]}]}"#,
            "code table 'missing'",
        ),
        (
            r#"{"datasets":[{"name":"X","label":"x","key":"k","provider":"p","fields":[{"name":"k","label":"k","type":"utf8","nullable":false,"share":"unconditional","grade":"L1"}]}]}"#,
            "snake_case",
        ),
        (
            r#"{"datasets":[{"name":"x","label":"x","key":"k","provider":"p","fields":[{"name":"k","label":"k","type":"money","share":"unconditional","grade":"L1"}]}]}"#,
            "unknown field type",
        ),
    ];
    for (json, want) in cases {
        let err = CatalogFile::parse(json, false, "t")
            .and_then(|f| c.apply(f))
            .expect_err(want);
        assert!(
            err.to_string().contains(want),
            "{err} should mention {want}"
        );
        assert_eq!(c, before);
    }
}
