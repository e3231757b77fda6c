/**
 * The service's OpenTelemetry SDK: a MeterProvider whose reader is the Prometheus exporter,
 * served on `/metrics` by the service's own HTTP server (the exporter's built-in server cannot
 * take port 0).
 */
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { metrics } from '@opentelemetry/api';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import { MeterProvider } from '@opentelemetry/sdk-metrics';

export interface Telemetry {
  /** The port `/metrics` is served on. */
  readonly port: number;
  /** Resolves on the next scrape of `/metrics`. */
  nextScrape(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Installs the SDK as the global MeterProvider, so every library instrumented with
 * `@opentelemetry/api` (pg-dual-read included) records into it; call it before
 * `createPersonsMigration()`. `port` 0 takes any free port.
 */
export async function startTelemetry(port: number): Promise<Telemetry> {
  const exporter = new PrometheusExporter({ preventServerStart: true });
  const provider = new MeterProvider({ readers: [exporter] });
  metrics.setGlobalMeterProvider(provider);
  let scraped: (() => void)[] = [];
  const server: Server = createServer((request, response) => {
    if (new URL(request.url ?? '/', 'http://localhost').pathname !== '/metrics') {
      response.statusCode = 404;
      response.end();
      return;
    }
    exporter.getMetricsRequestHandler(request, response);
    response.once('finish', () => {
      const waiting = scraped;
      scraped = [];
      for (const resolve of waiting) resolve();
    });
  });
  server.listen(port, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    nextScrape: () => new Promise((resolve) => scraped.push(resolve)),
    async close() {
      server.close();
      await provider.shutdown();
      metrics.disable();
    },
  };
}
