// Readable random room names that cannot be guessed: adjective-animal and four groups of four digits, e.g.
// "brave-otter-4821-0937-5512-8830". 64 adjectives × 64 animals × 10^16 ≈ 4.1 × 10^19 names, 65 bits: a
// server that answers 1,800 probes a second would need 700 million years to try half of them (and peercall
// throttles joins per address far below that). The digits read aloud and type easily on a phone.

import { randomInt } from './util.js';

const ADJECTIVES = [
  'amber', 'bold', 'brave', 'bright', 'calm', 'clever', 'cosy', 'crisp', 'curious', 'daring', 'eager', 'fancy',
  'fast', 'fearless', 'fierce', 'friendly', 'gentle', 'glad', 'golden', 'grand', 'happy', 'hardy', 'honest',
  'jolly', 'keen', 'kind', 'lively', 'lucky', 'merry', 'mighty', 'misty', 'modest', 'noble', 'patient', 'peppy',
  'plucky', 'polite', 'proud', 'quick', 'quiet', 'rapid', 'ready', 'rosy', 'rustic', 'shiny', 'silent', 'silver',
  'smart', 'snowy', 'sunny', 'swift', 'tidy', 'tiny', 'upbeat', 'vivid', 'warm', 'wild', 'wise', 'witty',
  'zesty', 'breezy', 'cheery', 'dapper', 'frosty',
];

const ANIMALS = [
  'otter', 'badger', 'beaver', 'bison', 'camel', 'cat', 'cheetah', 'crane', 'deer', 'dolphin', 'eagle', 'falcon',
  'ferret', 'finch', 'fox', 'gecko', 'gazelle', 'heron', 'hedgehog', 'ibis', 'jaguar', 'koala', 'lemur', 'lion',
  'llama', 'lynx', 'marten', 'meerkat', 'moose', 'narwhal', 'newt', 'ocelot', 'orca', 'owl', 'panda', 'panther',
  'parrot', 'pelican', 'penguin', 'puffin', 'quail', 'rabbit', 'raven', 'robin', 'salmon', 'seal', 'shark',
  'sparrow', 'squid', 'stork', 'swan', 'tapir', 'tiger', 'toucan', 'turtle', 'walrus', 'whale', 'wolf', 'wombat',
  'yak', 'zebra', 'alpaca', 'bobcat', 'coyote',
];

/** Random bits in a room name made by randomRoomName (log2 of 64 × 64 × 10^16). */
export const ROOM_NAME_BITS = Math.log2(ADJECTIVES.length * ANIMALS.length) + 16 * Math.log2(10);

export function randomRoomName() {
  const adjective = ADJECTIVES[randomInt(ADJECTIVES.length)];
  const animal = ANIMALS[randomInt(ANIMALS.length)];
  const groups = Array.from({ length: 4 }, () => String(randomInt(10_000)).padStart(4, '0'));
  return `${adjective}-${animal}-${groups.join('-')}`;
}
