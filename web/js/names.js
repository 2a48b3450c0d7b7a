// Readable random room names: adjective-animal-number, e.g. "brave-otter-42".
// 64 adjectives × 64 animals × 90 numbers ≈ 368,000 names: easy to read aloud, hard to stumble upon.

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

export function randomRoomName() {
  const adjective = ADJECTIVES[randomInt(ADJECTIVES.length)];
  const animal = ANIMALS[randomInt(ANIMALS.length)];
  const number = 10 + randomInt(90);
  return `${adjective}-${animal}-${number}`;
}
