// The part of google-protobuf's well-known Timestamp type that the API uses (the package ships
// no TypeScript declarations).
declare module 'google-protobuf/google/protobuf/timestamp_pb.js' {
  export class Timestamp {
    static fromDate(date: Date): Timestamp;
    getSeconds(): number;
    setSeconds(seconds: number): Timestamp;
    getNanos(): number;
    setNanos(nanos: number): Timestamp;
    toDate(): Date;
    toObject(): { seconds: number; nanos: number };
  }
}
