import type { Attributes, BatchObservableCallback, Meter, Observable } from '@opentelemetry/api';
import type { DualReadEmitter, DualReadEvents } from '../events.js';
import { type Phase, phases } from '../model/phase.js';
import { metricDefinitions as defs } from './metric-definitions.js';

/**
 * The gauges `pg_dual_read.phase` and `pg_dual_read.epoch`: the phase and epoch this instance
 * has applied, kept from its `phase:changed` events (its cached phase state). Observing them
 * queries nothing; before the instance has seen a phase (no read, write or phase change yet)
 * they report nothing. @internal
 *
 * @example
 * ```ts
 * const gauges = new PhaseGauges(meter, 'persons', migration.events);
 * gauges.close();
 * ```
 */
export class PhaseGauges {
  private applied: { readonly phase: Phase; readonly epoch: number } | undefined;
  private readonly onChange = ({ phase, epoch }: DualReadEvents['phase:changed'][0]) => {
    this.applied = { phase, epoch: Number(epoch) };
  };
  private readonly observe: BatchObservableCallback;
  private readonly observables: Observable[];

  constructor(
    private readonly meter: Meter,
    migration: string,
    private readonly events: DualReadEmitter,
  ) {
    const phaseGauge = meter.createObservableGauge(defs.phase.name, {
      description: defs.phase.description,
      unit: defs.phase.unit,
    });
    const epochGauge = meter.createObservableGauge(defs.epoch.name, {
      description: defs.epoch.description,
      unit: defs.epoch.unit,
    });
    const byPhase = new Map<Phase, Attributes>(
      phases.map((phase) => [phase, Object.freeze({ migration, phase })]),
    );
    const plain = Object.freeze({ migration });
    this.observe = (result) => {
      const applied = this.applied;
      if (!applied) return;
      for (const [phase, attributes] of byPhase) {
        result.observe(phaseGauge, phase === applied.phase ? 1 : 0, attributes);
      }
      result.observe(epochGauge, applied.epoch, plain);
    };
    this.observables = [phaseGauge, epochGauge];
    events.on('phase:changed', this.onChange);
    meter.addBatchObservableCallback(this.observe, this.observables);
  }

  /** Stops reporting (the migration closed). */
  close(): void {
    this.events.off('phase:changed', this.onChange);
    this.meter.removeBatchObservableCallback(this.observe, this.observables);
  }
}
