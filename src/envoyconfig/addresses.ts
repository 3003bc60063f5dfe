// Envoy's two address forms for what the config names: a TCP socket, or a Unix socket (Envoy's `pipe`).
import { isSocket, type HostPort, type ListenAddress } from '../config/values.js';

export function socketAddress({ host, port }: HostPort) {
  return { socket_address: { address: host, port_value: port } };
}

export function listenAddress(address: ListenAddress) {
  return isSocket(address) ? { pipe: { path: address.socket } } : socketAddress(address);
}
