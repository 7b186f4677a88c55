// A conformance module written the way the AssemblyScript SDK's README writes filters
// (@solo-io/proxy-runtime from npm). Driven by request headers, it reports what it saw through
// headers and a counter, so tests/scenarios/conformance/assemblyscript/ can check it in the
// harness and in Envoy 1.40 with the same expectations.
//
//   x-as-add: k=v          adds request header k: v
//   x-as-replace: k=v      replaces request header k with v
//   x-as-remove: k         removes request header k
//   x-as-reply: <status>   local reply: that status, body "denied by as", header x-as: local
//   x-as-property: a.b     request header x-as-property-value = the property a.b (dots become
//                          the NUL separators proxy-wasm expects). The SDK aborts the module
//                          (proc_exit) when the host answers anything but Ok, e.g. NotFound
//   x-as-callout: cluster  GET / to that cluster; the answer's :status goes to request header
//                          x-as-callout-status, then the request continues
// Every request: counter as_conformance.requests += 1, request header x-as-path = :path.
// Every response: x-as-config = the plugin configuration, x-as-upstream-status = :status.
export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext, Context, registerRootContext, FilterHeadersStatusValues, stream_context,
  send_local_response, continue_request, Headers, HeaderPair, GrpcStatusValues,
  Counter, WasmResultValues, LogLevelValues, log,
} from "@solo-io/proxy-runtime";
import { get_property } from "@solo-io/proxy-runtime/runtime";

class ConformanceRoot extends RootContext {
  requests: Counter | null = null;
  denied: Counter | null = null;

  onConfigure(configuration_size: u32): bool {
    super.onConfigure(configuration_size);
    this.requests = new Counter("as_conformance.requests");
    this.denied = new Counter("as_conformance.denied");
    return true;
  }

  createContext(context_id: u32): Context {
    return new Conformance(context_id, this);
  }
}

function pair(value: string): string[] {
  const eq = value.indexOf("=");
  if (eq < 0) return [value, ""];
  return [value.substring(0, eq), value.substring(eq + 1)];
}

function header(key: string, value: string): HeaderPair {
  return new HeaderPair(String.UTF8.encode(key), String.UTF8.encode(value));
}

class Conformance extends Context {
  root: ConformanceRoot;

  constructor(context_id: u32, root_context: ConformanceRoot) {
    super(context_id, root_context);
    this.root = root_context;
  }

  onRequestHeaders(a: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const requests = this.root.requests;
    if (requests) requests.increment(1);
    const request = stream_context.headers.request;
    request.add("x-as-path", request.get(":path"));

    const add = request.get("x-as-add");
    if (add != "") {
      const kv = pair(add);
      request.add(kv[0], kv[1]);
    }
    const replace = request.get("x-as-replace");
    if (replace != "") {
      const kv = pair(replace);
      request.replace(kv[0], kv[1]);
    }
    const remove = request.get("x-as-remove");
    if (remove != "") {
      request.remove(remove);
    }
    const property = request.get("x-as-property");
    if (property != "") {
      const value = get_property(property.replaceAll(".", "\0"));
      request.add("x-as-property-value", String.UTF8.decode(value));
    }
    const reply = request.get("x-as-reply");
    if (reply != "") {
      const denied = this.root.denied;
      if (denied) denied.increment(1);
      const headers: Headers = [];
      headers.push(header("x-as", "local"));
      send_local_response(U32.parseInt(reply), "as_reply", String.UTF8.encode("denied by as"),
        headers, GrpcStatusValues.Unknown);
      return FilterHeadersStatusValues.StopIteration;
    }
    const cluster = request.get("x-as-callout");
    if (cluster != "") {
      const headers: Headers = [];
      headers.push(header(":method", "GET"));
      headers.push(header(":path", "/"));
      headers.push(header(":authority", cluster));
      const result = this.root.httpCall(cluster, headers, new ArrayBuffer(0), [], 1000, this,
        (origin: Context, headers: u32, body_size: usize, trailers: u32): void => {
          // Read the pairs: with assemblyscript 0.14.9, this SDK's http_callback.get(":status")
          // fails the runtime's reference-count assertion and aborts the module (so it does in
          // Envoy 1.40 as in the harness).
          const pairs = stream_context.headers.http_callback.get_headers();
          let status = "none";
          for (let i = 0; i < pairs.length; i++) {
            if (String.UTF8.decode(pairs[i].key) == ":status") status = String.UTF8.decode(pairs[i].value);
          }
          stream_context.headers.request.add("x-as-callout-status", status);
          continue_request();
        });
      if (result != WasmResultValues.Ok) {
        log(LogLevelValues.warn, "as_conformance: http call failed: " + result.toString());
        request.add("x-as-callout-status", "error:" + result.toString());
        return FilterHeadersStatusValues.Continue;
      }
      return FilterHeadersStatusValues.StopIteration;
    }
    return FilterHeadersStatusValues.Continue;
  }

  onResponseHeaders(a: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const response = stream_context.headers.response;
    response.add("x-as-config", this.root.getConfiguration());
    response.add("x-as-upstream-status", response.get(":status"));
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32) => { return new ConformanceRoot(context_id); }, "as_conformance");
