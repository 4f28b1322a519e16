"""tandem's Python bootstrap: runs a Lambda handler or a WSGI app.

Standard library only. tandem writes this file under its data folder and
runs it with the deployment's interpreter, in the manifest's workdir:

  python3 bootstrap.py lambda MODULE.FUNCTION   # a Lambda Runtime API client
  python3 bootstrap.py wsgi MODULE:ATTR         # a WSGI server on $PORT

With TANDEM_TEMPLATE_FD set, the process is a template: it imports the code
once, then forks one child per instance when tandem asks (on that file
descriptor, one JSON object per line each way). See docs/functions.md.
"""

import importlib
import json
import os
import select
import signal
import sys
import threading
import time
import traceback

RUNTIME_PATH = "/2018-06-01/runtime"


def log(msg):
    sys.stderr.write("tandem-bootstrap: %s\n" % msg)
    sys.stderr.flush()


# ---------------------------------------------------------------- Lambda

class LambdaContext(object):
    """The context a handler gets, with the fields of AWS's Python runtime."""

    def __init__(self, request_id, deadline_ms, arn, identity, client_context):
        env = os.environ
        self.aws_request_id = request_id
        self.function_name = env.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = env.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.invoked_function_arn = arn
        self.memory_limit_in_mb = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
        self.log_group_name = env.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = env.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = identity
        self.client_context = client_context
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        return max(int(self._deadline_ms - time.time() * 1000), 0)


class _Obj(object):
    """A JSON object whose keys read as attributes (identity, client_context)."""

    def __init__(self, d):
        for k, v in (d or {}).items():
            setattr(self, k, v)


def error_shape(exc, tb=None):
    if tb is None:
        tb = exc.__traceback__
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        # The handler's frames, as AWS's runtime gives them (not ours).
        "stackTrace": [l.rstrip("\n") for l in traceback.format_list(
            [f for f in traceback.extract_tb(tb) if f.filename != __file__])],
    }


def import_handler(spec):
    """Returns the function that spec (module.function) names."""
    module, _, name = spec.rpartition(".")
    mod = importlib.import_module(module)
    fn = getattr(mod, name, None)
    if fn is None:
        raise AttributeError("module %r has no attribute %r (runtime.lambda.handler %s)" % (module, name, spec))
    if not callable(fn):
        raise TypeError("%s is not a function" % spec)
    return fn


class RuntimeAPI(object):
    """A client of the Lambda Runtime API, on one kept-alive connection."""

    def __init__(self, addr):
        import http.client
        self._http = http.client
        self.addr = addr
        self.conn = None

    def call(self, method, path, body=None, headers=None):
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = self._http.HTTPConnection(self.addr)
            try:
                self.conn.request(method, RUNTIME_PATH + path, body=body, headers=headers or {})
                resp = self.conn.getresponse()
                data = resp.read()
                return resp.status, resp.headers, data
            except (OSError, self._http.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt == 1 or body is None and method != "GET":
                    raise

    def post_json(self, path, obj, headers=None):
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        status, _, data = self.call("POST", path, json.dumps(obj).encode(), h)
        if status >= 300:
            log("POST %s: %d %s" % (path, status, data[:200].decode("utf-8", "replace")))


def lambda_init_error(api, exc, tb):
    traceback.print_exception(type(exc), exc, tb)
    if api is not None:
        try:
            shape = error_shape(exc, tb)
            shape["errorType"] = "Runtime.ImportModuleError" if isinstance(exc, ImportError) else "Runtime.HandlerNotFound" if isinstance(exc, AttributeError) else type(exc).__name__
            api.post_json("/init/error", shape, {"Lambda-Runtime-Function-Error-Type": shape["errorType"]})
        except Exception as e:  # noqa: BLE001 (nothing more to do)
            log("reporting the init error: %s" % e)


def lambda_loop(handler):
    """Runs handler on each event the Runtime API gives, until it goes."""
    addr = os.environ.get("AWS_LAMBDA_RUNTIME_API")
    if not addr:
        log("AWS_LAMBDA_RUNTIME_API is not set: tandem serves the Runtime API to Lambda instances")
        os._exit(2)
    api = RuntimeAPI(addr)
    while True:
        try:
            status, h, body = api.call("GET", "/invocation/next")
        except OSError as e:
            log("the Runtime API at %s is gone (%s); exiting" % (addr, e))
            os._exit(0)
        if status != 200:
            log("GET /invocation/next: %d %s" % (status, body[:200].decode("utf-8", "replace")))
            time.sleep(0.1)
            continue
        rid = h.get("Lambda-Runtime-Aws-Request-Id", "")
        trace = h.get("Lambda-Runtime-Trace-Id")
        if trace:
            os.environ["_X_AMZN_TRACE_ID"] = trace
        else:
            os.environ.pop("_X_AMZN_TRACE_ID", None)
        try:
            deadline = int(h.get("Lambda-Runtime-Deadline-Ms") or 0) or int(time.time() * 1000) + 900000
        except ValueError:
            deadline = int(time.time() * 1000) + 900000
        identity = client_context = None
        try:
            if h.get("Lambda-Runtime-Cognito-Identity"):
                identity = _Obj(json.loads(h["Lambda-Runtime-Cognito-Identity"]))
            if h.get("Lambda-Runtime-Client-Context"):
                client_context = _Obj(json.loads(h["Lambda-Runtime-Client-Context"]))
        except ValueError:
            pass
        ctx = LambdaContext(rid, deadline, h.get("Lambda-Runtime-Invoked-Function-Arn", ""), identity, client_context)
        try:
            event = json.loads(body) if body else None
            result = handler(event, ctx)
        except Exception as e:  # noqa: BLE001 (every error goes to /error)
            shape = error_shape(e)
            shape["requestId"] = rid
            traceback.print_exc()
            api.post_json("/invocation/%s/error" % rid, shape, {"Lambda-Runtime-Function-Error-Type": "Unhandled"})
            continue
        try:
            out = json.dumps(result).encode()
        except (TypeError, ValueError) as e:
            shape = {"errorMessage": "Unable to marshal response: %s" % e, "errorType": "Runtime.MarshalError",
                     "requestId": rid, "stackTrace": []}
            api.post_json("/invocation/%s/error" % rid, shape, {"Lambda-Runtime-Function-Error-Type": "Runtime.MarshalError"})
            continue
        api.call("POST", "/invocation/%s/response" % rid, out, {"Content-Type": "application/json"})


def lambda_main(spec, template_fd):
    sys.path.insert(0, os.getcwd())
    try:
        handler = import_handler(spec)
    except Exception as e:  # noqa: BLE001 (reported, then exit)
        addr = os.environ.get("AWS_LAMBDA_RUNTIME_API")
        lambda_init_error(RuntimeAPI(addr) if addr and template_fd is None else None, e, e.__traceback__)
        if template_fd is not None:
            template_failed(template_fd, e)
        sys.exit(1)
    if template_fd is not None:
        def prewarm():
            # The client's code path, against a port bound but not
            # listening (refused at once, and nobody else's).
            import socket
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", 0))
                RuntimeAPI("127.0.0.1:%d" % s.getsockname()[1]).call("GET", "/invocation/next")
            except OSError:
                pass
            finally:
                s.close()
            json.loads(json.dumps({"body": "{}"}))
        Template(template_fd, lambda: lambda_loop(handler), prewarm).run()
    else:
        lambda_loop(handler)


# ---------------------------------------------------------------- WSGI

class _Body(object):
    """wsgi.input: a request body of Content-Length bytes or chunked."""

    def __init__(self, rfile, length, chunked):
        self.rfile = rfile
        self.left = length  # bytes left in the body, or in the chunk
        self.chunked = chunked
        self.done = not chunked and length == 0

    def _next_chunk(self):
        line = self.rfile.readline(65537)
        if not line.endswith(b"\n"):
            raise ValueError("bad chunk size line")
        size = int(line.split(b";", 1)[0].strip(), 16)
        if size < 0:
            raise ValueError("bad chunk size")
        if size == 0:
            while True:  # trailers, up to the empty line
                t = self.rfile.readline(65537)
                if t in (b"\r\n", b"\n", b""):
                    break
            self.done = True
        self.left = size

    def read(self, n=-1):
        out = []
        while not self.done and n != 0:
            if self.chunked and self.left == 0:
                self._next_chunk()
                continue
            want = self.left if n is None or n < 0 else min(n, self.left)
            data = self.rfile.read(want)
            if not data:
                raise ValueError("request body cut short")
            self.left -= len(data)
            out.append(data)
            if n is not None and n > 0:
                n -= len(data)
            if self.left == 0:
                if self.chunked:
                    self.rfile.readline(3)  # the CRLF after the chunk
                else:
                    self.done = True
        return b"".join(out)

    def readline(self, limit=-1):
        buf = []
        while not self.done:
            c = self.read(1)
            if not c:
                break
            buf.append(c)
            if c == b"\n" or (0 < limit <= len(buf)):
                break
        return b"".join(buf)

    def readlines(self, hint=-1):
        return list(iter(self.readline, b""))

    def __iter__(self):
        return iter(self.readline, b"")

    def drain(self, limit):
        """Reads what the app left of the body; False past limit bytes."""
        seen = 0
        while not self.done:
            seen += len(self.read(65536))
            if seen > limit:
                return False
        return True


def make_wsgi_server(app, host, port):
    """A threaded HTTP/1.1 WSGI server: keep-alive, chunked bodies both ways."""
    if not _CLASSES:
        wsgi_server_class(app)
    server, handler = _CLASSES
    return server((host, port), handler)


_CLASSES = []  # the server and handler classes, built once


def wsgi_server_class(app):
    """Builds the server's classes for app (once: a template builds them
    before it forks) and returns the server class."""
    import socketserver
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from urllib.parse import unquote_to_bytes

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "tandem-wsgi"
        sys_version = ""
        timeout = 300  # idle keep-alive connections end after 5 minutes

        def log_message(self, fmt, *args):  # no line per request
            pass

        def handle_one_request(self):
            try:
                self.raw_requestline = self.rfile.readline(65537)
            except OSError:
                self.close_connection = True
                return
            if len(self.raw_requestline) > 65536:
                self.requestline = ""
                self.request_version = "HTTP/1.1"
                self.command = ""
                self.send_error(414)
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            try:
                self.run_app()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            try:
                self.wfile.flush()
            except OSError:
                self.close_connection = True

        def run_app(self):
            te = self.headers.get("Transfer-Encoding", "").lower()
            chunked = "chunked" in te
            length = 0
            if not chunked:
                cl = self.headers.get("Content-Length")
                if cl is not None:
                    try:
                        length = int(cl)
                        if length < 0:
                            raise ValueError
                    except ValueError:
                        self.send_error(400, "bad Content-Length")
                        self.close_connection = True
                        return
            if self.headers.get("Expect", "").lower() == "100-continue":
                self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = _Body(self.rfile, length, chunked)
            path, _, query = self.path.partition("?")
            if path.startswith(("http://", "https://")):
                path = "/" + path.split("/", 3)[-1] if path.count("/") >= 3 else "/"
            env = {
                "REQUEST_METHOD": self.command,
                "SCRIPT_NAME": "",
                "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
                "QUERY_STRING": query,
                "SERVER_NAME": self.server.server_address[0],
                "SERVER_PORT": str(self.server.server_address[1]),
                "SERVER_PROTOCOL": self.request_version,
                "REMOTE_ADDR": self.client_address[0],
                "REMOTE_PORT": str(self.client_address[1]),
                "RAW_URI": self.path,
                "REQUEST_URI": self.path,
                "wsgi.version": (1, 0),
                "wsgi.url_scheme": "http",
                "wsgi.input": body,
                "wsgi.errors": sys.stderr,
                "wsgi.multithread": True,
                "wsgi.multiprocess": False,
                "wsgi.run_once": False,
                "wsgi.input_terminated": True,
            }
            for k, v in self.headers.items():
                if "_" in k:
                    continue  # a header with "_" could pose as one with "-"
                key = k.upper().replace("-", "_")
                if key == "CONTENT_TYPE" or key == "CONTENT_LENGTH":
                    if key == "CONTENT_LENGTH" and chunked:
                        continue
                    env[key] = v
                    continue
                key = "HTTP_" + key
                env[key] = env[key] + "," + v if key in env else v
            state = {"status": None, "headers": None, "sent": False, "chunked": False, "length": None}
            head_only = self.command == "HEAD"

            def start_response(status, headers, exc_info=None):
                if exc_info:
                    try:
                        if state["sent"]:
                            raise exc_info[1].with_traceback(exc_info[2])
                    finally:
                        exc_info = None
                elif state["status"] is not None:
                    raise AssertionError("start_response called twice")
                state["status"], state["headers"] = status, headers
                return write

            def send_head(body_len):
                code = int(state["status"].split(" ", 1)[0])
                names = {k.lower() for k, _ in state["headers"]}
                lines = ["HTTP/1.1 %s\r\n" % state["status"]]
                bodyless = head_only or code in (204, 304) or code < 200
                if "content-length" in names:
                    state["length"] = True
                elif body_len is not None and not bodyless:
                    lines.append("Content-Length: %d\r\n" % body_len)
                elif not bodyless:
                    state["chunked"] = True
                    lines.append("Transfer-Encoding: chunked\r\n")
                conn = self.headers.get("Connection", "").lower()
                if "close" in conn or self.close_connection:
                    self.close_connection = True
                    lines.append("Connection: close\r\n")
                if "date" not in names:
                    lines.append("Date: %s\r\n" % self.date_time_string())
                for k, v in state["headers"]:
                    lines.append("%s: %s\r\n" % (k, v))
                lines.append("\r\n")
                self.wfile.write("".join(lines).encode("latin-1"))
                state["sent"] = True
                if bodyless:
                    state["chunked"] = False
                    state["skip"] = True

            def write(data):
                if state["status"] is None:
                    raise AssertionError("write before start_response")
                if not state["sent"]:
                    send_head(None)
                if not data or state.get("skip"):
                    return
                if state["chunked"]:
                    self.wfile.write(b"%x\r\n" % len(data) + data + b"\r\n")
                else:
                    self.wfile.write(data)

            result = None
            try:
                result = app(env, start_response)
                if isinstance(result, (list, tuple)) and len(result) == 1 and state["status"] is not None and not state["sent"]:
                    data = result[0]
                    send_head(len(data))
                    if data and not state.get("skip"):
                        self.wfile.write(data)
                else:
                    for data in result:
                        write(data)
                    if not state["sent"]:
                        send_head(0)
                if state["chunked"]:
                    self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                raise
            except Exception:  # noqa: BLE001 (the app failed: 500, or cut the answer)
                traceback.print_exc()
                if state["sent"]:
                    self.close_connection = True  # a cut answer must not look complete
                    return
                msg = b"Internal Server Error\n"
                self.wfile.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
                                 b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(msg), msg))
                self.close_connection = True
                return
            finally:
                if hasattr(result, "close"):
                    try:
                        result.close()
                    except Exception:  # noqa: BLE001
                        traceback.print_exc()
            try:
                if not body.drain(1 << 20):
                    self.close_connection = True
            except (ValueError, OSError):
                self.close_connection = True

    class Server(socketserver.ThreadingMixIn, HTTPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 128

        def server_bind(self):
            # HTTPServer's looks up the host's name (getfqdn), which can
            # take long; the address is enough.
            socketserver.TCPServer.server_bind(self)
            self.server_name, self.server_port = self.server_address[:2]

    _CLASSES[:] = [Server, Handler]
    return Server


def serve_wsgi(app):
    port = int(os.environ.get("PORT") or "8080")
    host = os.environ.get("HOST") or "127.0.0.1"
    srv = make_wsgi_server(app, host, port)
    srv.serve_forever(poll_interval=3600)  # shut down only by a signal


def warm_wsgi(app, path):
    """Calls the app once on its health path, in the template, so that the
    work a framework does on its first request (Flask builds its URL map)
    is done once rather than in every instance."""
    if not path:
        return
    import io
    path, _, query = path.partition("?")
    env = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": query,
           "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "0", "SERVER_PROTOCOL": "HTTP/1.1",
           "REMOTE_ADDR": "127.0.0.1", "HTTP_USER_AGENT": "tandem-template-warmup",
           "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""),
           "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": False,
           "wsgi.run_once": False}
    try:
        result = app(env, lambda status, headers, exc_info=None: None)
        for _ in result:
            pass
        if hasattr(result, "close"):
            result.close()
    except Exception:  # noqa: BLE001 (a warm-up only)
        log("warming the app on %s failed (instances will do it on their first request):" % path)
        traceback.print_exc()


def wsgi_main(spec, template_fd):
    """Runs the app's module as __main__ (so that setup under
    `if __name__ == "__main__"` runs), with Flask's app.run serving through
    this server on $PORT; a module that never calls run is served after it
    has run. A template forks where the app would start serving."""
    import runpy
    module, _, attr = spec.partition(":")
    sys.path.insert(0, os.getcwd())
    served = []

    def serve(app):
        served.append(app)
        if template_fd is not None:
            warm = os.environ.pop("TANDEM_TEMPLATE_WARM", "")
            warm_wsgi(app, warm)
            wsgi_server_class(app)

            def prewarm():
                make_wsgi_server(app, "127.0.0.1", 0).server_close()
                warm_wsgi(app, warm)
            Template(template_fd, lambda: serve_wsgi(app), prewarm).run()
        else:
            serve_wsgi(app)
        os._exit(0)

    def patched_run(self, *args, **kwargs):
        serve(self)

    _patch_on_import("flask", lambda flask: setattr(flask.Flask, "run", patched_run))
    try:
        path = _module_path(module)
        sys.argv = [path or module]
        if path is None:
            ns = runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            ns = runpy.run_path(path, run_name="__main__")
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 (reported, then exit)
        traceback.print_exc()
        if template_fd is not None:
            template_failed(template_fd, e)
        sys.exit(1)
    app = ns
    for part in attr.split("."):
        app = app.get(part) if isinstance(app, dict) else getattr(app, part, None)
        if app is None:
            break
    if app is None:
        e = AttributeError("module %r has no attribute %r (runtime.wsgi %s)" % (module, attr, spec))
        log(str(e))
        if template_fd is not None:
            template_failed(template_fd, e)
        sys.exit(1)
    serve(app)


def _module_path(module):
    """The file of a top-level module in the working folder, else None."""
    if "." in module:
        return None
    for cand in (module + ".py", os.path.join(module, "__main__.py")):
        if os.path.isfile(cand):
            return os.path.abspath(cand)
    return None


def _patch_on_import(name, patch):
    """Calls patch(module) once `name` is imported (now, if it is already)."""
    if name in sys.modules:
        patch(sys.modules[name])
        return
    import importlib.abc

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path, target=None):
            if fullname != name:
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(fullname)
            if spec is None or spec.loader is None:
                return spec
            exec_module = spec.loader.exec_module

            def exec_and_patch(mod):
                exec_module(mod)
                patch(mod)
            spec.loader.exec_module = exec_and_patch
            return spec

    import importlib.util
    sys.meta_path.insert(0, Finder())


# ---------------------------------------------------------------- templates

def template_failed(fd, exc):
    msg = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        os.write(fd, (json.dumps({"op": "failed", "error": msg}) + "\n").encode())
    except OSError:
        pass


_libc = []


def _load_libc():
    """Loads libc through ctypes (in the template, once for every child)."""
    try:
        import ctypes
        _libc.append(ctypes.CDLL(None, use_errno=True))
    except Exception:  # noqa: BLE001 (not Linux, or no ctypes)
        pass


def _prctl_pdeathsig():
    """Asks the kernel to SIGKILL this process when its parent dies."""
    if not _libc:
        return False
    PR_SET_PDEATHSIG = 1
    return _libc[0].prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0


def _socket_fds(keep):
    out = []
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return out
    for n in names:
        fd = int(n)
        if fd in keep:
            continue
        try:
            if os.readlink("/proc/self/fd/" + n).startswith("socket:"):
                out.append(fd)
        except OSError:
            pass
    return out


def _native_threads():
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


# SPARE_DELAY is how long after handing out its spare the template forks
# the next one: not at once, so that the new instance's start does not
# compete with the fork for the CPU.
SPARE_DELAY = 0.2


class Template(object):
    """Forks one child per instance when tandem asks, and reports exits.

    Protocol (one JSON object per line on fd):
      to tandem:   {"op":"ready","pid":N} | {"op":"failed","error":TEXT}
                   {"op":"forked","id":ID,"pid":N} | {"op":"exit","id":ID,"code":C,"signal":S}
      from tandem: {"op":"fork","id":ID,"env":{...},"log":PATH} | {"op":"kill","id":ID,"signal":N}
    EOF from tandem: kill every child, exit.
    One spare child is forked ahead and waits on a pipe; a fork request
    hands it the instance's id, environment and log.
    """

    def __init__(self, fd, serve_child, prewarm=None):
        self.fd = fd
        self.serve_child = serve_child
        self.prewarm = prewarm
        self.children = {}  # pid -> id (None: the spare)
        self.byid = {}      # id -> pid
        self.spare = None   # (pid, pipe to it): a child ready to become an instance
        self.spare_at = 0   # when to fork the next spare (monotonic)
        self.wake = ()

    def send(self, obj):
        data = (json.dumps(obj) + "\n").encode()
        while data:
            n = os.write(self.fd, data)
            data = data[n:]

    def hazards(self):
        names = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        if names:
            raise RuntimeError(
                "the code started threads at import (%s): a fork copies only the calling thread, so their "
                "locks and work would be lost in every instance. Start threads on the first request "
                "instead, or deploy without runtime.template" % ", ".join(names))
        if _native_threads() > 1:
            log("warning: %d native threads run in the template (a native library's thread pool); "
                "only the forking thread is copied into instances" % _native_threads())
        socks = _socket_fds({0, 1, 2, self.fd})
        if socks:
            log("warning: %d socket(s) opened at import (fds %s) are closed in every instance; "
                "open connections on the first request instead" % (len(socks), socks))

    def run(self):
        try:
            self.hazards()
        except RuntimeError as e:
            log(str(e))
            template_failed(self.fd, e)
            os._exit(1)
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)
        signal.set_wakeup_fd(wfd)
        signal.signal(signal.SIGCHLD, lambda *a: None)
        signal.signal(signal.SIGTERM, lambda *a: self.quit(0))
        # What every instance needs, imported once here rather than in each.
        import http.client, http.server, socketserver, urllib.parse, random  # noqa: F401,E401
        _load_libc()
        import gc
        gc.collect()
        gc.freeze()  # keep the imported objects' pages shared across forks
        self.wake = (rfd, wfd)
        self.send({"op": "ready", "pid": os.getpid()})
        buf = b""
        self.spare = self.make_spare()
        while True:
            timeout = None
            if self.spare is None:
                timeout = max(self.spare_at - time.monotonic(), 0)
                if timeout == 0:
                    self.spare = self.make_spare()
                    self.spare_at = time.monotonic() + SPARE_DELAY
                    continue
            try:
                r, _, _ = select.select([self.fd, rfd], [], [], timeout)
            except InterruptedError:
                continue
            if rfd in r:
                try:
                    while os.read(rfd, 512):
                        pass
                except BlockingIOError:
                    pass
                self.reap()
            if self.fd in r:
                data = os.read(self.fd, 65536)
                if not data:
                    self.quit(0)
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    self.handle(json.loads(line))

    def handle(self, msg):
        op = msg.get("op")
        if op == "fork":
            self.fork(msg)
        elif op == "kill":
            pid = self.byid.get(msg["id"])
            if pid:
                try:
                    os.killpg(pid, int(msg.get("signal", signal.SIGTERM)))
                except OSError:
                    pass

    def fork(self, msg):
        """Hands msg to the spare child, or forks one for it."""
        iid = msg["id"]
        spare = self.spare
        self.spare = None
        if spare is None:
            spare = self.make_spare()
            if spare is None:
                self.send({"op": "forked", "id": iid, "error": "fork failed: see the template's log"})
                return
        pid, w = spare
        try:
            os.write(w, (json.dumps(msg) + "\n").encode())
        except OSError as e:  # the spare died: the next one will do
            os.close(w)
            self.send({"op": "forked", "id": iid, "error": "the spare child is gone: %s" % e})
            return
        os.close(w)
        self.children[pid] = iid
        self.byid[iid] = pid
        self.send({"op": "forked", "id": iid, "pid": pid})
        self.spare_at = time.monotonic() + SPARE_DELAY

    def make_spare(self):
        """Forks a child that prepares itself and waits for its instance
        (Android's pool of unspecialized processes, of one): the fork and
        the child's setup happen before a cold start asks for them."""
        r, w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        try:
            pid = os.fork()
        except OSError as e:
            log("fork: %s" % e)
            os.close(r)
            os.close(w)
            return None
        if pid == 0:
            os.close(w)
            self.child(r, parent)
            os._exit(0)
        os.close(r)
        self.children[pid] = None
        return pid, w

    def child(self, r, parent):
        try:
            os.setpgid(0, 0)
            _prctl_pdeathsig()
            if os.getppid() != parent:
                os._exit(1)  # the template died during the fork
            signal.set_wakeup_fd(-1)
            for s in (signal.SIGCHLD, signal.SIGTERM):
                signal.signal(s, signal.SIG_DFL)
            for fd in self.wake + (self.fd,) + ((self.spare[1],) if self.spare else ()):
                os.close(fd)
            for fd in _socket_fds({0, 1, 2}):
                try:
                    os.close(fd)
                except OSError:
                    pass
            import random
            random.seed()
            np = sys.modules.get("numpy")
            if np is not None:
                try:
                    np.random.seed()
                except Exception:  # noqa: BLE001
                    pass
            if self.prewarm is not None:
                # Run the serving path once while waiting, so that the pages
                # it touches are copied from the template now, not during
                # the cold start.
                try:
                    self.prewarm()
                except Exception:  # noqa: BLE001 (a warm-up only)
                    pass
            # Wait for the instance this child becomes.
            data = b""
            while not data.endswith(b"\n"):
                chunk = os.read(r, 65536)
                if not chunk:
                    os._exit(0)  # the template no longer needs it
                data += chunk
            os.close(r)
            msg = json.loads(data)
            if msg.get("log"):
                lf = os.open(msg["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                os.dup2(lf, 1)
                os.dup2(lf, 2)
                os.close(lf)
            os.environ.update(msg.get("env") or {})
            self.serve_child()
        except SystemExit as e:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(e.code if isinstance(e.code, int) else 1)
        except BaseException:  # noqa: BLE001 (the child must never return into the template loop)
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(1)
        os._exit(0)

    def reap(self):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid not in self.children:
                continue
            iid = self.children.pop(pid)
            if iid is None:  # a spare
                if self.spare and self.spare[0] == pid:
                    os.close(self.spare[1])
                    self.spare = None
                    self.spare_at = time.monotonic() + SPARE_DELAY
                continue
            self.byid.pop(iid, None)
            code, sig = -1, 0
            if os.WIFEXITED(status):
                code = os.WEXITSTATUS(status)
            elif os.WIFSIGNALED(status):
                sig = os.WTERMSIG(status)
            try:
                os.killpg(pid, signal.SIGKILL)  # whatever it left in its group
            except OSError:
                pass
            self.send({"op": "exit", "id": iid, "code": code, "signal": sig})

    def quit(self, code):
        for pid in list(self.children):
            for kill in (os.killpg, os.kill):  # a spare may not have its own group yet
                try:
                    kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        os._exit(code)


def asgi_main(spec):
    """Serves an ASGI app (module:attr) with uvicorn on 127.0.0.1:$PORT."""
    module, _, attr = spec.partition(":")
    sys.path.insert(0, os.getcwd())
    try:
        import uvicorn
    except ImportError:
        log("runtime.asgi needs uvicorn in this interpreter (Debian: python3-uvicorn; pip: uvicorn)")
        return 1
    try:
        app = importlib.import_module(module)
    except Exception:  # noqa: BLE001 (reported, then exit)
        traceback.print_exc()
        return 1
    for part in attr.split("."):
        app = getattr(app, part, None)
        if app is None:
            log("module %r has no attribute %r (runtime.asgi %s)" % (module, attr, spec))
            return 1
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")),
                log_level="warning", access_log=False, lifespan="auto")
    return 0


def main(argv):
    if len(argv) != 3 or argv[1] not in ("lambda", "wsgi", "asgi"):
        sys.stderr.write("usage: bootstrap.py lambda MODULE.FUNCTION | wsgi MODULE:ATTR | asgi MODULE:ATTR\n")
        return 2
    fd = os.environ.pop("TANDEM_TEMPLATE_FD", None)
    fd = int(fd) if fd else None
    if argv[1] == "lambda":
        lambda_main(argv[2], fd)
    elif argv[1] == "asgi":
        return asgi_main(argv[2])
    else:
        wsgi_main(argv[2], fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
