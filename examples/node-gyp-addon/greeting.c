// A native addon (Node-API) returning the greeting the server answers with.
#include <node_api.h>

static napi_value greeting(napi_env env, napi_callback_info info) {
  napi_value s;
  napi_create_string_utf8(env, "Hello from node-gyp-addon (native)\n", NAPI_AUTO_LENGTH, &s);
  return s;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "greeting", NAPI_AUTO_LENGTH, greeting, NULL, &fn);
  napi_set_named_property(env, exports, "greeting", fn);
  return exports;
}
