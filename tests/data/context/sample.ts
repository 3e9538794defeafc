import { readFile } from "node:fs/promises";
import type { Stats } from "node:fs";

export interface User {
  id: number;
  name: string;
  email?: string;
}

export type Role = "admin" | "editor" | "viewer";

const ROLE_TEXT: Record<Role, string> = {
  admin: "Administrator",
  editor: "Editor",
  viewer: "Viewer",
};

export function describe(user: User, role: Role): string {
  const who = user.email ? `${user.name} <${user.email}>` : user.name;
  return `${who} (${ROLE_TEXT[role]})`;
}

export class UserStore {
  private users = new Map<number, User>();

  add(user: User): void {
    if (this.users.has(user.id)) {
      throw new Error(`duplicate user ${user.id}`);
    }
    this.users.set(user.id, user);
  }

  find(id: number): User | undefined {
    return this.users.get(id);
  }
}

export async function loadUsers(file: string): Promise<User[]> {
  const text = await readFile(file, "utf8");
  const data = JSON.parse(text) as User[];
  return data.filter((u) => u.id > 0);
}

export function sizeOf(stats: Stats): number {
  return stats.size;
}
