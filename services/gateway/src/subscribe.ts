// containerd's Events.Subscribe answered by the gateway itself, from its own NATS subscriptions on
// the event subjects: dockerd learns of a container's exit only from this stream, and through the
// events service every event took two more hops (to it and back over the bus) before the client.
// The same code as the events service's (@berth/bus LiveEvents): same filters and errors, shared
// subscriptions per subject, the same cut-off of a slow reader. Publish, Forward and Replay stay
// with the events service.
import type * as grpc from '@grpc/grpc-js';
import { codec, method } from '@berth/api';
import { decodeMessage, LiveEvents, type LiveEventsOptions } from '@berth/bus';
import { clientCanceled, status } from './forward.js';

export const subscribePath = '/containerd.services.events.v1.Events/Subscribe';

/** Subscribe's handler, with subscriptions on the gateway's connection (`o.nc`) for its node. */
export function subscribeHandler(o: LiveEventsOptions): grpc.handleServerStreamingCall<Buffer, Buffer> {
  const live = new LiveEvents(o);
  const request = codec<{ filters?: string[] }>(method(subscribePath).requestType);
  return (call) => {
    const ac = new AbortController();
    const onCancel = () => ac.abort(clientCanceled);
    call.once('cancelled', onCancel);
    // an event is pending until HTTP/2 took it (the write's callback): a reader that stops
    // reading holds its events here until LiveEvents cuts it off, as the bus's credit did
    const send = (b: Uint8Array) =>
      new Promise<void>((resolve, reject) => {
        if (call.cancelled) return reject(clientCanceled);
        call.write(Buffer.from(b.buffer, b.byteOffset, b.byteLength), (err?: Error | null) => (err ? reject(err) : resolve()));
      });
    Promise.resolve()
      .then(() => live.subscribe((decodeMessage(request, call.request) as { filters?: string[] }).filters ?? [], ac.signal, send))
      .then(
        () => {
          if (!call.cancelled) call.end();
        },
        (e) => {
          if (!call.cancelled) call.emit('error', status(e));
        },
      )
      .finally(() => call.removeListener('cancelled', onCancel));
  };
}
