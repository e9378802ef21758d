// Swagger UI over this server's OpenAPI document. Nothing may reach another host: no validator badge, no
// remote configuration from the query string.
window.ui = SwaggerUIBundle({
  url: new URL("/openapi.json", window.location.href).toString(),
  dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  validatorUrl: null,
  queryConfigEnabled: false,
  deepLinking: true,
  tryItOutEnabled: false,
  persistAuthorization: false,
});
