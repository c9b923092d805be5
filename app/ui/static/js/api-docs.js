// Starts Swagger UI on the OpenAPI document. "Authorize" takes an API key as a Bearer token; the browser's
// session cookie is not used here (no CSRF header would go with it).
const root = document.getElementById("swagger-ui");
window.SwaggerUIBundle({
  url: root.dataset.openapiUrl,
  domNode: root,
  deepLinking: true,
  persistAuthorization: false,
  withCredentials: false,
});
