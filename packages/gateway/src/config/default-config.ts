/**
 * The configuration written on first start when no file exists: embedded defaults (SQLite, the
 * in-process engine serving the shipped model), every option shown with a comment.
 */
import { fileURLToPath } from 'node:url';
import { relative, resolve, sep } from 'node:path';

/** Absolute path of the model shipped in this installation (`models/` at the repository root). */
export const SHIPPED_MODEL = resolve(fileURLToPath(import.meta.url), '../../../../../models/sovra-austen-1m.Q8_0.gguf');

/**
 * The default YAML for a configuration file in `configDir`: its `model_path` points at the shipped
 * model relative to that folder (`./models/…` when the file sits at the repository root).
 */
export function defaultConfigYaml(configDir: string): string {
  let rel = relative(configDir, SHIPPED_MODEL).split(sep).join('/');
  if (!rel.startsWith('.') && !rel.startsWith('/')) rel = `./${rel}`;
  return DEFAULT_CONFIG_YAML.replace('model_path: ./models/sovra-austen-1m.Q8_0.gguf', `model_path: ${rel}`);
}

/** Commented default YAML. Relative paths resolve against this file's folder. */
export const DEFAULT_CONFIG_YAML = `# Sovra configuration. Reference: README.md, "Configuration reference".
# Durations are milliseconds, sizes bytes. Relative paths resolve against this file's folder.

server:
  host: 127.0.0.1          # listen address (use 0.0.0.0 behind a load balancer)
  port: 8080
  # body_limit_bytes: 20971520     # 20 MiB, so base64 images pass; larger bodies get 413
  # sse_heartbeat_ms: 15000        # ': keep-alive' to idle streaming clients; 0 = off
  # max_request_timeout_ms: 600000 # upper bound for the x-sovra-timeout-ms request header
  # request_timeout_ms: 120000     # a client must send its whole request within this

database:
  url: "sqlite:./data/sovra.db"   # or postgres://user@host:5432/db

logging:
  level: info              # fatal | error | warn | info | debug | trace | silent

metering:                  # limits and budgets are set through /admin/v1 (README)
  # redis_url: redis://127.0.0.1:6379   # share rate-limit counters between replicas
  default_max_tokens: 4096 # reserved, and sent upstream as the cap, when a request sets none
  prices: {}               # e.g. { sovra-austen: { input_per_1m_usd: 0.1, output_per_1m_usd: 0.4 } }

audit:                     # the verifiable transparency log (docs/audit.md)
  enabled: true
  # origin: gw.example.gov/audit        # the log's name; generated once and kept when unset
  key_file: ./data/audit-signing.key   # Ed25519 signing key, created on first start (mode 0600)
  checkpoint_interval_ms: 1000
  content_retention:       # keep the exact request/response bytes, sealed and erasable (docs/audit.md)
    enabled: false
    key_file: ./data/audit-content.key # AES-256 keys, created on first use (mode 0600)
    max_body_bytes: 1048576  # larger bodies are not kept
    max_age_days: 0          # delete content older than this; 0 = until erased
    # tenants: [ministry-of-health]    # only these tenants' requests; default every request

backends:
  # The embedded engine: runs a GGUF model in-process (llama.cpp), fully offline.
  - id: embedded
    provider: embedded
    model_path: ./models/sovra-austen-1m.Q8_0.gguf
    # jurisdiction: MY     # where it runs; default residency.home_jurisdiction
    threads: 1             # 1 is fastest for tiny models on small machines
    context_size: 2048     # tokens; clamped to the model's own (256 for sovra-austen)
    contexts: 1            # concurrent generations; more requests queue
  # An external OpenAI-compatible engine (vLLM, SGLang, llama.cpp server, Ollama, TGI, ...):
  # - id: engine-1
  #   provider: openai-compatible
  #   base_url: http://127.0.0.1:8000/v1
  #   api_key_env: ENGINE1_KEY        # optional; if present, that env var must be set (else this backend is not ready)
  #   jurisdiction: MY
  #   capabilities: { token_field: passthrough, stream_usage: true }
  #   timeouts: { connect_ms: 5000, first_byte_ms: 60000, idle_ms: 60000, total_ms: 600000 }

models:
  - name: sovra-austen     # what clients ask for
    backend: embedded      # or a pool: [ { backend: a, weight: 2 }, { backend: b } ] with a strategy
    # fallbacks: [other-alias]           # tried when this alias's backends cannot serve
    # retry: { attempts: 3, base_ms: 100, max_ms: 2000 }
  # - name: test-model
  #   backend: engine-1
  #   upstream_model: mock-llm        # what the engine is asked for

privacy:                   # personal identifiers found locally and handled before routing (docs/privacy.md)
  enabled: true
  default:
    action: redact         # block | redact | mask | tokenize | allow
  # tenants:
  #   health-ministry: { action: tokenize, types: { PAYMENT_CARD: block } }

# Residency (docs/routing.md): where each tenant's data may go. Routing fails closed (HTTP 451).
# residency:
#   classifications: [public, internal, confidential, secret]   # lowest first
#   home_jurisdiction: MY                # where this gateway (and the embedded engine) runs
#   default: { allowed_jurisdictions: ["*"] }
#   tenants:
#     health-ministry: { allowed_jurisdictions: [MY], default_classification: confidential }
`;
