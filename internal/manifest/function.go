package manifest

import "regexp"

var (
	// handlerRE is a Python handler, module.function (the module may be
	// dotted: pkg.app.lambda_handler).
	handlerRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*\.[A-Za-z_][A-Za-z0-9_]*$`)
	// appRE is a Python WSGI or ASGI app, module:attr.
	appRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*$`)
)

// validateFunction checks runtime.lambda, wsgi, asgi, python and template.
func validateFunction(m *Manifest, bad func(field, msg string, args ...any)) {
	r := m.Runtime
	if l := r.Lambda; l != nil {
		switch {
		case len(l.Command) == 0 && l.Handler == "":
			bad("runtime.lambda", "give runtime.lambda.command (a custom runtime's program, such as [./bootstrap]) or runtime.lambda.handler (a Python handler, module.function)")
		case len(l.Command) > 0 && l.Handler != "":
			bad("runtime.lambda", "give runtime.lambda.command or runtime.lambda.handler, not both")
		}
		if len(l.Command) > 0 && l.Command[0] == "" {
			bad("runtime.lambda.command[0]", "must name a program")
		}
		if l.Handler != "" && !handlerRE.MatchString(l.Handler) {
			bad("runtime.lambda.handler", "%q must be module.function, such as app.lambda_handler", l.Handler)
		}
		if l.Python != "" && l.Handler == "" {
			bad("runtime.lambda.python", "only a Python handler (runtime.lambda.handler) has an interpreter")
		}
		if m.Scaling.ContainerConcurrency > 1 {
			bad("scaling.container_concurrency", "a function takes one event per instance at a time, as in Lambda (%d given); leave it unset or 1", m.Scaling.ContainerConcurrency)
		}
		if r.Health != "" {
			bad("runtime.health", "a function is ready when it first asks the Runtime API for an event; remove runtime.health")
		}
		switch l.Event {
		case "", EventAPIGWv1, EventAPIGWv2:
		default:
			bad("runtime.lambda.event", "%q is not an event shape (apigw-v1 | apigw-v2)", l.Event)
		}
	}
	for _, a := range []struct{ field, v string }{{"runtime.wsgi", r.WSGI}, {"runtime.asgi", r.ASGI}} {
		if a.v != "" && !appRE.MatchString(a.v) {
			bad(a.field, "%q must be module:attr, such as app:app", a.v)
		}
	}
	if r.Python != "" && r.WSGI == "" && r.ASGI == "" {
		bad("runtime.python", "only a wsgi or asgi app has an interpreter (a Lambda handler's is runtime.lambda.python)")
	}
	if t := r.Template; t != nil {
		if r.WSGI == "" && r.ASGI == "" && (r.Lambda == nil || r.Lambda.Handler == "") {
			bad("runtime.template", "only a Python app (runtime.wsgi, runtime.asgi) or handler (runtime.lambda.handler) can start from a template")
		}
		if t.Keep < 0 {
			bad("runtime.template.keep", "must not be negative")
		}
	}
	if (r.Lambda != nil || r.WSGI != "" || r.ASGI != "") && (m.Backend == BackendDocker || m.Backend == BackendKubernetes) {
		bad("backend", "runtime.lambda, wsgi and asgi run on the process backend only (for %s, package the function in an image with a web server)", m.Backend)
	}
}
