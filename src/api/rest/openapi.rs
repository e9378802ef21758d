//! `/openapi.json`: the OpenAPI 3 document of the REST routes, built from the same route table as the router
//! ([`super::ID_KINDS`]) and from the types the routes read, so the two cannot drift apart.

use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Ref,
    Required,
};

use super::ID_KINDS;
use super::original::{OriginalComponent, OriginalMeta, OriginalModel, OriginalNeeds};
use crate::api::graphql::pipeline::{
    PipelineComponent, PipelineFile, PipelineProblem, PipelineProblemCode, PipelineResolution,
    PipelineRole, PipelineTotals,
};
use crate::api::graphql::types::{FileNeeds, PlatformInfo};

fn json_body(schema: &str, description: &str) -> utoipa::openapi::request_body::RequestBody {
    RequestBodyBuilder::new()
        .description(Some(description))
        .required(Some(Required::True))
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(schema)))
                .build(),
        )
        .build()
}

fn file_body() -> utoipa::openapi::request_body::RequestBody {
    let form = ObjectBuilder::new()
        .property(
            "file",
            ObjectBuilder::new().schema_type(Type::String).format(Some(
                utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Binary),
            )),
        )
        .required("file");
    RequestBodyBuilder::new()
        .description(Some(
            "The file, streamed to storage; it replaces the previous one.",
        ))
        .required(Some(Required::True))
        .content(
            "multipart/form-data",
            ContentBuilder::new().schema(Some(form)).build(),
        )
        .build()
}

fn json_response(description: &str, schema: &str, array: bool) -> utoipa::openapi::Response {
    let content = if array {
        ContentBuilder::new()
            .schema(Some(
                utoipa::openapi::schema::ArrayBuilder::new().items(Ref::from_schema_name(schema)),
            ))
            .build()
    } else {
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(schema)))
            .build()
    };
    ResponseBuilder::new()
        .description(description)
        .content("application/json", content)
        .build()
}

fn error(description: &str) -> utoipa::openapi::Response {
    json_response(description, "Error", false)
}

fn empty(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new().description(description).build()
}

fn file_response() -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description("The file, streamed (206 for a Range request).")
        .content(
            "application/octet-stream",
            ContentBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::String).format(
                    Some(utoipa::openapi::SchemaFormat::KnownFormat(
                        utoipa::openapi::KnownFormat::Binary,
                    )),
                )))
                .build(),
        )
        .build()
}

fn path_parameter(name: &str) -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build()
}

fn query_parameter(name: &str) -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::True)
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build()
}

fn described(
    mut parameter: utoipa::openapi::path::Parameter,
    description: &str,
) -> utoipa::openapi::path::Parameter {
    parameter.description = Some(description.to_string());
    parameter
}

/// The query parameters that pick a per-platform variant of a download, as `fileFor(device)` does.
fn platform_parameters(builder: OperationBuilder) -> OperationBuilder {
    builder
        .parameter(described(
            optional(query_parameter("platform")),
            "The device's platform, `os/arch[/variant]` (`linux/arm64`, `linux/arm/v7`): serves the best variant \
             it runs, else the default file. Without it, the default file.",
        ))
        .parameter(described(
            optional(query_parameter("accelerator")),
            "With `platform`: the device's accelerators (`cuda`, or `cuda,tensorrt`), each with its version in \
             `accelerator_version`.",
        ))
        .parameter(described(
            optional(query_parameter("accelerator_version")),
            "The version of each accelerator, in the same order (`8.6`, or `8.6,10.2`).",
        ))
        .response(
            "400",
            error("`platform` or the accelerators are not valid, or an accelerator has no version."),
        )
}

fn optional(mut parameter: utoipa::openapi::path::Parameter) -> utoipa::openapi::path::Parameter {
    parameter.required = Required::False;
    parameter
}

fn operation(id: String, tag: &str, summary: &str) -> OperationBuilder {
    OperationBuilder::new()
        .operation_id(Some(id))
        .tag(tag)
        .summary(Some(summary))
        .response(
            "401",
            error(
                "A bearer token is needed and missing or not valid (when tokens are configured).",
            ),
        )
        .response(
            "403",
            error(
                "The token may only read (when tokens are configured), this server is a read-only mirror \
                 (`READ_ONLY_MIRROR`), or (downloads, `--signatures enforce`) the file has no verified signature \
                 (`UNSIGNED`).",
            ),
        )
}

/// The routes of one kind: `base` is `/model` or `/{kind}`; `key` the path of one component below it.
fn kind_paths(paths: PathsBuilder, kind: &str, key: &str, key_parameters: &[&str]) -> PathsBuilder {
    let schema = if kind == "model" {
        "Model"
    } else {
        "Component"
    };
    let with_key = |builder: OperationBuilder| {
        key_parameters.iter().fold(builder, |builder, name| {
            builder.parameter(path_parameter(name))
        })
    };
    let collection = PathItem::new(
        HttpMethod::Post,
        operation(
            format!("create_{kind}"),
            kind,
            &format!("Registers a {kind}."),
        )
        .request_body(Some(json_body(schema, &format!("The {kind}."))))
        .response(
            "201",
            json_response(&format!("The {kind}, created."), schema, false),
        )
        .response(
            "400",
            error("A component with this key exists, or the key is not valid."),
        )
        .response("415", error("The body is not sent as JSON."))
        .response("422", error("The body is not a JSON object of this shape."))
        .build(),
    );
    let mut collection = collection;
    collection.merge_operations(PathItem::new(
        HttpMethod::Get,
        operation(format!("list_{kind}s"), kind, &format!("Every {kind}."))
            .response(
                "200",
                json_response(&format!("Every {kind}."), schema, true),
            )
            .build(),
    ));

    let mut download = platform_parameters(with_key(operation(
        format!("download_{kind}"),
        kind,
        &format!("Downloads the file of a {kind}."),
    )));
    if kind == "model" {
        download = download.parameter(described(
            optional(query_parameter("device")),
            "With `@alias` in place of the version: the id of the device asking, as it reports itself. While a \
             rollout moves the alias, the device gets its cohort's version; `X-Model-Version` names the version \
             served.",
        ));
    }
    let mut item = PathItem::new(
        HttpMethod::Get,
        download
        .response("200", file_response())
        .response("304", empty("Not modified (If-None-Match)."))
        .response(
            "404",
            error("No such component, no file yet, or none for the platform (the message lists those there are)."),
        )
        .response(
            "416",
            error("The range is outside the file, or the file is empty."),
        )
        .build(),
    );
    item.merge_operations(PathItem::new(
        HttpMethod::Put,
        with_key(operation(
            format!("upload_{kind}"),
            kind,
            &format!("Uploads the file of a {kind}."),
        ))
        .request_body(Some(file_body()))
        .response("204", empty("Stored."))
        .response("404", error("No such component."))
        .response("413", error("The file is larger than the limit."))
        .response(
            "400",
            error("The body is cut short or is not a multipart form."),
        )
        .response("422", error("The form has no field `file`."))
        .build(),
    ));
    item.merge_operations(PathItem::new(
        HttpMethod::Delete,
        with_key(operation(
            format!("delete_{kind}"),
            kind,
            &format!("Deletes a {kind} and its file."),
        ))
        .parameter(described(
            optional(query_parameter("force")),
            "`true` deletes it even when live devices report running it.",
        ))
        .response("204", empty("Deleted."))
        .response("404", error("No such component."))
        .response(
            "409",
            error(
                "Live devices report running it (code `IN_USE`, with their count in `devices`), or it is locked \
                 or aliased.",
            ),
        )
        .build(),
    ));

    let (meta_body, meta_summary) = if kind == "model" {
        (
            json_body("ModelMeta", "The new metadata."),
            "Replaces a model's metadata.".to_string(),
        )
    } else {
        (
            json_body(
                "Component",
                "The whole object; an `id`, if given, must be the path's.",
            ),
            format!("Replaces the metadata of a {kind}."),
        )
    };
    let meta = PathItem::new(
        HttpMethod::Put,
        with_key(operation(
            format!("update_{kind}_meta"),
            kind,
            &meta_summary,
        ))
        .request_body(Some(meta_body))
        .parameter(optional_header_parameter(
            "If-Match",
            "The component's revision in quotes (`\"3\"`, the `ETag` of the last update, or `revision` in \
             GraphQL): update only if nobody wrote since.",
        ))
        .response("204", empty("Updated; the `ETag` header is the new revision."))
        .response(
            "400",
            error("The body's id is not the path's, or a value is not valid."),
        )
        .response(
            "412",
            error("`If-Match` names another revision than the component's (code `CONFLICT`)."),
        )
        .response("404", error("No such component."))
        .response("415", error("The body is not sent as JSON."))
        .response("422", error("The body is not a JSON object of this shape."))
        .build(),
    );
    let meta_path = key.replacen(&format!("/{kind}/"), &format!("/{kind}/meta/"), 1);
    paths
        .path(format!("/{kind}"), collection)
        .path(key, item)
        .path(meta_path, meta)
        .path(format!("{key}/signatures"), signature_paths(kind, with_key))
}

/// `POST` and `GET {key}/signatures`.
fn signature_paths(
    kind: &str,
    with_key: impl Fn(OperationBuilder) -> OperationBuilder,
) -> PathItem {
    let file_parameters = |builder: OperationBuilder| {
        builder
            .parameter(described(
                optional(query_parameter("platform")),
                "A per-platform file, `os/arch[/variant]`, exactly as uploaded; without it, the default file.",
            ))
            .parameter(described(
                optional(query_parameter("accelerator")),
                "With `platform`: the variant's accelerator, as uploaded.",
            ))
            .parameter(described(
                optional(query_parameter("accelerator_version")),
                "With `accelerator`: the variant's accelerator version requirement, as uploaded.",
            ))
    };
    let bundle_body = RequestBodyBuilder::new()
        .description(Some(
            "The Sigstore bundle (v0.3) exactly as `model_signing sign` writes it; its statement must name the \
             file's sha256. At most 32 KiB.",
        ))
        .required(Some(Required::True))
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("SigstoreBundle")))
                .build(),
        )
        .build();
    let mut item = PathItem::new(
        HttpMethod::Post,
        file_parameters(with_key(operation(
            format!("add_{kind}_signature"),
            kind,
            &format!("Attaches a signature to the file of a {kind}."),
        )))
        .request_body(Some(bundle_body))
        .response(
            "201",
            json_response(
                "Attached; the verdict of this server's trust policy.",
                "Signature",
                false,
            ),
        )
        .response(
            "200",
            json_response(
                "This bundle was attached already; nothing changed.",
                "Signature",
                false,
            ),
        )
        .response(
            "400",
            error(
                "Not a model-signing bundle, or its statement names other bytes than the file's.",
            ),
        )
        .response(
            "404",
            error("No such component, or no file (for the platform)."),
        )
        .response(
            "409",
            error("The file has as many signatures as it keeps (8)."),
        )
        .response("413", error("The bundle is larger than 32 KiB."))
        .response("415", error("The body is not sent as JSON."))
        .response("422", error("The body is not a JSON object."))
        .build(),
    );
    item.merge_operations(PathItem::new(
        HttpMethod::Get,
        file_parameters(with_key(operation(
            format!("list_{kind}_signatures"),
            kind,
            &format!("The signatures of the file of a {kind}, with their bundles and verdicts."),
        )))
        .response(
            "200",
            json_response("The file's sha256 and signatures.", "Signatures", false),
        )
        .response(
            "404",
            error("No such component, or no file (for the platform)."),
        )
        .build(),
    ));
    item
}

/// The body of `POST /devices/{id}/report`.
fn device_report_schema() -> ObjectBuilder {
    let number = || {
        ObjectBuilder::new()
            .schema_type(Type::Number)
            .minimum(Some(0.0))
    };
    let integer = || {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0.0))
    };
    ObjectBuilder::new()
        .description(Some(
            "What a device reports: `device` as GraphQL's `DeviceInput` (platform and accelerators, gpu, \
             gpuMemory, ram, storage in GB, libraries), `running` (at most 64 entries `{kind, id}` or \
             `{kind: \"model\", name, version}`, with the `sha256` of the file it runs), and `health` since the last \
             report.",
        ))
        .property("device", ObjectBuilder::new())
        .property(
            "running",
            utoipa::openapi::schema::ArrayBuilder::new().items(
                ObjectBuilder::new()
                    .property("kind", ObjectBuilder::new().schema_type(Type::String))
                    .property("id", ObjectBuilder::new().schema_type(Type::String))
                    .property("name", ObjectBuilder::new().schema_type(Type::String))
                    .property("version", ObjectBuilder::new().schema_type(Type::String))
                    .property("sha256", ObjectBuilder::new().schema_type(Type::String))
                    .required("kind"),
            ),
        )
        .property(
            "health",
            ObjectBuilder::new()
                .property("requests", integer())
                .property("errors", integer())
                .property("p99Ms", number()),
        )
}

fn signature_schema() -> ObjectBuilder {
    let text = || ObjectBuilder::new().schema_type(Type::String);
    let nullable_text = || {
        ObjectBuilder::new().schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            Type::String,
            Type::Null,
        ]))
    };
    ObjectBuilder::new()
        .description(Some(
            "A signature of a file and this server's verdict on it under its trust policy (`--trust-policy`).",
        ))
        .property("id", text().description(Some("The sha256 of the bundle.")))
        .property(
            "verified",
            ObjectBuilder::new().schema_type(Type::Boolean).description(Some(
                "Whether a key or certificate authority of a rule covering this component signed a statement \
                 naming exactly these bytes.",
            )),
        )
        .property(
            "signer",
            nullable_text().description(Some("`sha256:<hex>` of a key, or a certificate's identity.")),
        )
        .property("reason", nullable_text().description(Some("Why it is not verified.")))
        .property("addedAt", text().format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::DateTime,
        ))))
        .property("addedBy", text().description(Some("The label of the token that attached it.")))
        .property(
            "bundle",
            Ref::from_schema_name("SigstoreBundle"),
        )
        .required("id")
        .required("verified")
        .required("addedAt")
        .required("addedBy")
}

fn header_parameter(name: &str, description: &str) -> utoipa::openapi::path::Parameter {
    let parameter = ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(Required::True)
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build();
    described(parameter, description)
}

fn optional_header_parameter(name: &str, description: &str) -> utoipa::openapi::path::Parameter {
    let mut parameter = header_parameter(name, description);
    parameter.required = Required::False;
    parameter
}

/// A tus request: the protocol version header, and the 412 for a request without it.
fn tus_operation(id: &str, summary: &str) -> OperationBuilder {
    operation(id.into(), "uploads", summary)
        .parameter(header_parameter("Tus-Resumable", "`1.0.0`."))
        .response(
            "412",
            error("`Tus-Resumable: 1.0.0` is missing (the answer carries `Tus-Version`)."),
        )
}

/// The tus 1.0 routes of resumable uploads (core, creation, termination, expiration, checksum).
fn upload_paths(paths: PathsBuilder) -> PathsBuilder {
    let mut collection = PathItem::new(
        HttpMethod::Post,
        tus_operation("create_upload", "Starts a resumable upload (tus creation).")
            .parameter(header_parameter("Upload-Length", "The whole file's size in bytes."))
            .parameter(header_parameter(
                "Upload-Metadata",
                "`key base64(value)` pairs: `name` and `version` (a model) or `kind` and `id`; optional \
                 `platform`, `accelerator`, `accelerator_version`, `filename`, `filetype`, `sha256`.",
            ))
            .response(
                "201",
                empty("Started; `Location` is the session, with `Upload-Offset: 0` and `Upload-Expires`."),
            )
            .response("400", error("A header or the metadata is missing or not valid."))
            .response("404", error("The target component does not exist."))
            .response("409", error("The target's file may not be replaced (`IMMUTABLE`)."))
            .response("413", error("`Upload-Length` is over the size limit."))
            .response(
                "429",
                error("The token holds `--max-upload-sessions` unfinished sessions (`TOO_MANY_UPLOAD_SESSIONS`)."),
            )
            .build(),
    );
    let typed = |schema_type: Type| ObjectBuilder::new().schema_type(schema_type).build();
    let listed = ObjectBuilder::new()
        .property("id", typed(Type::String))
        .property("location", typed(Type::String))
        .property("target", typed(Type::Object))
        .property("platform", typed(Type::String))
        .property("filename", typed(Type::String))
        .property("contentType", typed(Type::String))
        .property("length", typed(Type::Integer))
        .property("offset", typed(Type::Integer))
        .property("createdAt", typed(Type::String))
        .property("expiresAt", typed(Type::String));
    collection.merge_operations(PathItem::new(
        HttpMethod::Get,
        tus_operation(
            "list_uploads",
            "The caller's unfinished sessions, oldest first (ours, not tus); DELETE a `location` to cancel one.",
        )
        .response(
            "200",
            ResponseBuilder::new()
                .description("The sessions of the caller's token.")
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(utoipa::openapi::schema::ArrayBuilder::new().items(listed)))
                        .build(),
                )
                .build(),
        )
        .build(),
    ));
    collection.merge_operations(PathItem::new(
        HttpMethod::Options,
        OperationBuilder::new()
            .operation_id(Some("describe_uploads"))
            .tag("uploads")
            .summary(Some(
                "What the server supports: `Tus-Version`, `Tus-Extension`, `Tus-Max-Size`.",
            ))
            .response("204", empty("The capabilities, in headers."))
            .build(),
    ));
    let with_id = |builder: OperationBuilder| builder.parameter(path_parameter("id"));
    let gone = || error("No such session: it finished, expired or was terminated.");
    let mut item = PathItem::new(
        HttpMethod::Head,
        with_id(tus_operation("upload_status", "Where a session stands."))
            .response(
                "200",
                empty("`Upload-Offset`, `Upload-Length` and `Upload-Expires`."),
            )
            .response("404", gone())
            .build(),
    );
    item.merge_operations(PathItem::new(
        HttpMethod::Patch,
        with_id(tus_operation(
            "append_upload",
            "Appends bytes at `Upload-Offset`; the last byte verifies and attaches the file.",
        ))
        .parameter(header_parameter("Upload-Offset", "The session's offset (ask with HEAD)."))
        .parameter(optional(header_parameter(
            "Upload-Checksum",
            "`sha256 <base64 digest>` of this request's bytes.",
        )))
        .request_body(Some(
            RequestBodyBuilder::new()
                .required(Some(Required::True))
                .content(
                    "application/offset+octet-stream",
                    ContentBuilder::new()
                        .schema(Some(ObjectBuilder::new().schema_type(Type::String).format(Some(
                            utoipa::openapi::SchemaFormat::KnownFormat(
                                utoipa::openapi::KnownFormat::Binary,
                            ),
                        ))))
                        .build(),
                )
                .build(),
        ))
        .response("204", empty("Appended; `Upload-Offset` is the new offset."))
        .response(
            "400",
            error("More bytes than the length leaves room for, a body cut short, or a file whose sha256 is not the announced one (nothing attached)."),
        )
        .response("404", gone())
        .response(
            "409",
            error("`Upload-Offset` is not the session's, or another request is appending."),
        )
        .response("415", error("The body is not `application/offset+octet-stream`."))
        .response("460", error("`Upload-Checksum` does not match: none of the bytes were kept."))
        .build(),
    ));
    item.merge_operations(PathItem::new(
        HttpMethod::Delete,
        with_id(tus_operation(
            "terminate_upload",
            "Ends a session and removes its bytes (tus termination).",
        ))
        .response("204", empty("Terminated."))
        .response("404", gone())
        .build(),
    ));
    paths
        .path("/uploads", collection)
        .path("/uploads/{id}", item)
}

/// The document served at `/openapi.json`.
pub fn document() -> OpenApi {
    let mut paths = kind_paths(
        PathsBuilder::new(),
        "model",
        "/model/{name}/{version}",
        &["name", "version"],
    );
    for kind in ID_KINDS {
        paths = kind_paths(paths, kind.as_str(), &format!("/{kind}/{{id}}"), &["id"]);
    }
    let model_meta = PathItem::new(
        HttpMethod::Get,
        operation(
            "get_model_meta".into(),
            "model",
            "A model's object, found by name and either version or alias.",
        )
        .parameter(query_parameter("model_name"))
        .parameter(optional(query_parameter("model_version")))
        .parameter(optional(query_parameter("model_alias")))
        .parameter(described(
            optional(query_parameter("device")),
            "With `model_alias`: the id of the device asking; during a rollout, its cohort's version.",
        ))
        .response("200", json_response("The model.", "Model", false))
        .response("404", error("No such model."))
        .response("422", error("A parameter is missing."))
        .build(),
    );
    let blob = PathItem::new(
        HttpMethod::Get,
        operation(
            "download_blob".into(),
            "blobs",
            "Downloads any stored file by its sha256, with `Cache-Control: immutable`.",
        )
        .parameter(described(
            path_parameter("hex"),
            "The sha256 of the bytes, 64 hexadecimal digits.",
        ))
        .parameter(described(
            optional(query_parameter("filename")),
            "The name `Content-Disposition` gives the saved file (a variant's `downloadUrl` carries its own).",
        ))
        .response("200", file_response())
        .response("304", empty("Not modified (If-None-Match)."))
        .response("400", error("Not a sha256 digest."))
        .response(
            "404",
            error("No component or variant refers to these bytes."),
        )
        .response(
            "416",
            error("The range is outside the file, or the file is empty."),
        )
        .build(),
    );
    let free = |description: &str| ObjectBuilder::new().description(Some(description)).build();
    let pipeline_request = ObjectBuilder::new()
        .description(Some(
            "An inference server's configuration files, as they are, and a device. Each of the four files may be \
             left out; what the resolution does not use (parameters, input formats, `modules`, `method`, \
             `use_cuda`) is ignored.",
        ))
        .property(
            "setup",
            free("`setup.json`: `service.servicer` and `inference.inferencer` are fetched."),
        )
        .property(
            "model",
            free(
                "`model.json`: `model_name` with `model_version`, or with `model_alias` (`production`) instead.",
            ),
        )
        .property(
            "preprocessing",
            utoipa::openapi::schema::ArrayBuilder::new()
                .description(Some("`preprocessing_pipeline.json`: steps `{\"id\", \"parameters\"}`, in order."))
                .items(ObjectBuilder::new().property("id", ObjectBuilder::new().schema_type(Type::String))),
        )
        .property(
            "postprocessing",
            utoipa::openapi::schema::ArrayBuilder::new()
                .description(Some("`postprocessing_pipeline.json`, as `preprocessing`."))
                .items(ObjectBuilder::new().property("id", ObjectBuilder::new().schema_type(Type::String))),
        )
        .property(
            "device",
            free("The device, as GraphQL's `DeviceInput` (`{\"ram\": 4, \"gpu\": true, \"gpuMemory\": 8, \"libraries\": [{\"name\", \"version\"}], \"platform\": {\"os\", \"arch\"}}`)."),
        )
        .required("device");
    let resolve_pipeline = PathItem::new(
        HttpMethod::Post,
        operation(
            "resolve_pipeline".into(),
            "pipelines",
            "Resolves an inference server's configuration for a device: the file each part would fetch, the \
             sums of their needs, every problem (`code` as GraphQL's `PipelineProblemCode`) and a lock digest. A \
             read: it needs a read token only when reads are not public.",
        )
        .request_body(Some(
            RequestBodyBuilder::new()
                .required(Some(Required::True))
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("PipelineRequest")))
                        .build(),
                )
                .build(),
        ))
        .response(
            "200",
            json_response(
                "The resolution; missing parts are problems, not errors.",
                "PipelineResolution",
                false,
            ),
        )
        .response(
            "400",
            error("The body is not JSON or not of this shape: `detail` names the field."),
        )
        .response("413", error("The body is larger than 2 MiB."))
        .response("415", error("The body is not sent as `application/json`."))
        .build(),
    );
    let error_schema = ObjectBuilder::new()
        .description(Some(
            "`detail` is a message (a list of problems for a body that is not the object, as FastAPI gave); `code` is \
             the error's code, as in GraphQL's `extensions.code`.",
        ))
        .property("detail", ObjectBuilder::new())
        .property("code", ObjectBuilder::new().schema_type(Type::String))
        .required("detail")
        .required("code");
    let device_report = PathItem::new(
        HttpMethod::Post,
        operation(
            "report_device".into(),
            "devices",
            "A device reports its hardware, what it runs and its health since its last report. Device and \
             write tokens may send it.",
        )
        .parameter(described(
            path_parameter("id"),
            "The device's id, a key part (no `/`).",
        ))
        .request_body(Some(json_body(
            "DeviceReport",
            "The device (as GraphQL's `DeviceInput`), what it runs and its health.",
        )))
        .response(
            "200",
            json_response("The report as stored, with its hardware class.", "StoredDeviceReport", false),
        )
        .response("400", error("A value is not valid (an id, a number, too many entries)."))
        .response("403", error("The token may not report (a read token)."))
        .response("413", error("The report is larger than 64 KiB."))
        .response("415", error("The body is not sent as JSON."))
        .response("422", error("The body is not a JSON object."))
        .build(),
    );
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("component-repository REST API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The original service's REST routes, and `POST /pipelines/resolve`. GraphQL, at /graphql, is described by \
                     schema.graphql.",
                ))
                .build(),
        )
        .paths(
            upload_paths(paths)
                .path("/model/meta", model_meta)
                .path("/blobs/sha256/{hex}", blob)
                .path("/devices/{id}/report", device_report)
                .path("/pipelines/resolve", resolve_pipeline)
                .build(),
        )
        .components(Some(
            ComponentsBuilder::new()
                .schema_from::<OriginalModel>()
                .schema_from::<OriginalMeta>()
                .schema_from::<OriginalComponent>()
                .schema_from::<OriginalNeeds>()
                .schema("PipelineRequest", pipeline_request)
                .schema_from::<PipelineResolution>()
                .schema_from::<PipelineComponent>()
                .schema_from::<PipelineFile>()
                .schema_from::<PlatformInfo>()
                .schema_from::<FileNeeds>()
                .schema_from::<PipelineRole>()
                .schema_from::<PipelineProblemCode>()
                .schema_from::<PipelineTotals>()
                .schema_from::<PipelineProblem>()
                .schema("Error", error_schema)
                .schema("Signature", signature_schema())
                .schema("DeviceReport", device_report_schema())
                .schema(
                    "StoredDeviceReport",
                    device_report_schema()
                        .description(Some("A device's latest report as stored."))
                        .property("id", ObjectBuilder::new().schema_type(Type::String))
                        .property(
                            "hardwareClass",
                            ObjectBuilder::new().schema_type(Type::String).description(Some(
                                "`os/arch[/variant]`, `+accelerator` per accelerator, `@` and the memory bucket.",
                            )),
                        )
                        .property("receivedAt", ObjectBuilder::new().schema_type(Type::String))
                        .property("reportedBy", ObjectBuilder::new().schema_type(Type::String))
                        .required("id")
                        .required("hardwareClass")
                        .required("receivedAt"),
                )
                .schema(
                    "Signatures",
                    ObjectBuilder::new()
                        .property("sha256", ObjectBuilder::new().schema_type(Type::String))
                        .property(
                            "signatures",
                            utoipa::openapi::schema::ArrayBuilder::new()
                                .items(Ref::from_schema_name("Signature")),
                        )
                        .required("sha256")
                        .required("signatures"),
                )
                .schema(
                    "SigstoreBundle",
                    ObjectBuilder::new()
                        .description(Some(
                            "A Sigstore bundle v0.3 (`application/vnd.dev.sigstore.bundle.v0.3+json`): a DSSE \
                             envelope over an in-toto statement (predicate `https://model_signing/signature/v1.0`), \
                             kept exactly as sent.",
                        ))
                        .property("mediaType", ObjectBuilder::new().schema_type(Type::String))
                        .property("verificationMaterial", ObjectBuilder::new())
                        .property("dsseEnvelope", ObjectBuilder::new())
                        .required("mediaType"),
                )
                .security_scheme(
                    "bearer",
                    SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
                )
                .build(),
        ))
        .security(Some([SecurityRequirement::new("bearer", Vec::<String>::new())]))
        .build()
}
