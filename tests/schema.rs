//! `schema.graphql` is the public contract: it must be exactly what the code serves.

#[test]
fn committed_schema_matches_the_code() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql")).unwrap();
    let generated = component_repository::api::graphql::sdl();
    assert!(
        committed == generated,
        "schema.graphql differs from the schema the code serves; regenerate it with\n    \
         cargo run -- schema > schema.graphql\nand review the diff: it is the API contract."
    );
}

#[test]
fn the_contract_names_the_fixed_operations() {
    let sdl = component_repository::api::graphql::sdl();
    for name in [
        "model(name: String!, version: String, alias: String, device: String): Model",
        "transformation(id: ID!): Transformation",
        "runnableOn(device: DeviceInput!",
        "resolvePipeline(device: DeviceInput!, pipeline: PipelineInput!): PipelineResolution!",
        "fileFor(device: DeviceInput!): File",
        "uploadModelFile(name: String!, version: String!, file: Upload!, platform: PlatformInput, needs: NeedsInput, precision: String, expectedRevision: Long): Model!",
        "uploadServiceFile(id: ID!, file: Upload!, platform: PlatformInput, needs: NeedsInput, precision: String, expectedRevision: Long): Service!",
        "totalCount: Int!",
        "scalar Long",
    ] {
        assert!(sdl.contains(name), "missing from the schema: {name}");
    }
}
