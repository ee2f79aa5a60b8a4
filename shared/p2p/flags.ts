/** The peer network's flags, shared by the mirror and the webhook (both join the DHT). */
import { flag } from '../cli.ts';
import { parseListenAddress } from '../listen-address.ts';

export function peerFlags() {
  return {
    routerAddr: flag.custom('Address of the libp2p peer network (DHT).', 'ADDR', parseListenAddress, ':5001'),
    networkKeyFile: flag.string('libp2p pre-shared key file: only processes holding it join the network (empty: an open network).', '', 'PATH'),
    bootstrapPeers: flag.custom('Comma list of peers to join through: host:port or multiaddrs.', 'LIST', parseList, ''),
    bootstrapDns: flag.string('DNS name whose A/AAAA records are peers (a headless Service), resolved again now and then.', '', 'NAME'),
  };
}

function parseList(raw: string): string[] {
  return raw.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
}
