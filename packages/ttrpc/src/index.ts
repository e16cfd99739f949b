// containerd's ttrpc: framing, client, server, and typed use over @berth/api's services.
export { TtrpcClient, ClientStream, type CallOptions, type StreamOptions } from './client.js';
export { TtrpcServer, type ServerContext, type ServerStream, type UnaryHandler, type StreamHandler, type StreamKind, type ListenOptions } from './server.js';
export { serveService, serviceClient, type TypedClient, type TypedHandler } from './typed.js';
export { MAX_MESSAGE_LENGTH, HEADER_LENGTH, MessageType, Flags, FrameReader, encodeFrame } from './frame.js';
export type { Metadata, MetadataInit, Status } from './wire.js';
export { statusOf, errorOf } from './status.js';
