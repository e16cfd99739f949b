import { runService } from '@berth/kit';
import { startGateway } from './server.js';

await runService('gateway', async (env) => {
  const g = await startGateway({
    nc: env.nc,
    node: env.node,
    address: env.config.grpc.address,
    mode: parseInt(env.config.grpc.mode, 8),
    uid: env.config.grpc.uid,
    gid: env.config.grpc.gid,
    root: env.root,
    maxRecv: env.config.grpc.max_recv_message_size,
    maxSend: env.config.grpc.max_send_message_size,
  });
  return g.stop;
});
